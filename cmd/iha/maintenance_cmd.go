package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("maintenance", command{
		summary: "keep a host out of recovery (or bring it back): iha maintenance HOST on|off [--reason R]",
		run:     runMaintenance,
	})
}

func runMaintenance(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runMutation(ctx, "maintenance", "iha maintenance HOST on|off [--reason R] [--json] [--addr A,B]", args, 2, stdout, stderr,
		func(pos []string, reason string) (api.MutationKind, string, string, bool) {
			switch pos[1] {
			case "on":
				return api.MutMaintenanceOn, pos[0], reason, true
			case "off":
				return api.MutMaintenanceOff, pos[0], reason, true
			}
			fmt.Fprintf(stderr, "iha maintenance: %q: want on or off\n", pos[1])
			return "", "", "", false
		})
}
