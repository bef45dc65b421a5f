//go:build !dev

package main

import (
	"context"
	"fmt"
	"io"
)

// devOptions and runDev stand in for dev mode (dev.go) in a production
// build: the simulated cloud (novasim, the Redfish simulator, the sandbox)
// is linked only with the build tag dev, which `make dev` sets.
type devOptions struct {
	keep           bool
	stdout, stderr io.Writer
}

func runDev(_ context.Context, o devOptions) int {
	fmt.Fprintln(o.stderr, "iha-leader: -dev: this build has no demo (it is built without the simulators); run `make dev` from the source tree (go run -tags dev ./cmd/iha-leader -dev)")
	return 2
}
