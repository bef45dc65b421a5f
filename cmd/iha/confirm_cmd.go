package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("confirm-fenced", command{
		summary: "state that a host is powered off when its BMC cannot: iha confirm-fenced HOST --reason R",
		run:     runConfirm,
	})
}

func runConfirm(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runMutation(ctx, "confirm-fenced", "iha confirm-fenced HOST --reason R [--json] [--addr A,B]", args, 1, stdout, stderr,
		func(pos []string, reason string) (api.MutationKind, string, string, bool) {
			if reason == "" {
				fmt.Fprintln(stderr, "iha confirm-fenced: --reason is required: say how you know the host is off (evacuating a host that still runs corrupts disks)")
				return "", "", "", false
			}
			return api.MutConfirmFenced, pos[0], reason, true
		})
}
