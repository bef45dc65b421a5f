package main

import (
	"context"
	"io"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("resume", command{
		summary: "start recovering failed hosts again after iha pause: iha resume",
		run:     runResume,
	})
}

func runResume(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runMutation(ctx, "resume", "iha resume [--json] [--addr A,B]", args, 0, stdout, stderr,
		func(pos []string, reason string) (api.MutationKind, string, string, bool) {
			return api.MutResume, "", reason, true
		})
}
