package ipmi

import (
	"os"
	"testing"

	"github.com/ihaproject/iha/fence/ipmi/internal/simbmc"
)

func TestMain(m *testing.M) {
	// The harness re-executes this binary as the reaper of ipmi_sim.
	simbmc.MaybeReaper()
	os.Exit(m.Run())
}
