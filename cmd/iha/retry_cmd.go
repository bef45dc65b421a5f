package main

import (
	"context"
	"io"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("retry", command{
		summary: "send a failed recovery back to work: iha retry HOST",
		run:     runRetry,
	})
}

func runRetry(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runMutation(ctx, "retry", "iha retry HOST [--json] [--addr A,B]", args, 1, stdout, stderr,
		func(pos []string, reason string) (api.MutationKind, string, string, bool) {
			return api.MutRetry, pos[0], reason, true
		})
}
