package drivers_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/bmh/bmhtest"
	"github.com/ihaproject/iha/fence/drivers"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/fence/redfish/redfishsim"
	"github.com/ihaproject/iha/pkg/config"
)

func TestEveryAgentOfThisBuild(t *testing.T) {
	ca, err := bmhtest.WriteCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sim, err := redfishsim.Start(redfishsim.Options{Username: "root", Password: "calvin-canary"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	f := config.Fencing{Hosts: []config.FenceHost{
		{Name: "rf-0", Agent: "redfish", IPAddr: sim.Host(), IPPort: sim.Port(), Login: "root",
			Passwd: config.NewSecret("calvin-canary"), UUID: config.DefaultRedfishUUID},
		{Name: "ipmi-0", Agent: "ipmi", IPAddr: "127.0.0.1", IPPort: 6230, Login: "admin", Passwd: config.NewSecret("x")},
		{Name: "noop-0", Agent: "noop"},
		{Name: "bmh-0", Agent: "bmh", Host: "bmh-0", Namespace: "openstack", Token: config.NewSecret("bmh-token-canary"),
			APIURL: "https://127.0.0.1:6443", CAFile: ca},
		// bmh without ca_file outside a pod: the service-account CA is
		// missing, a configuration error at load time.
		{Name: "bmh-1", Agent: "bmh", Host: "bmh-1", Namespace: "openstack", Token: config.NewSecret("bmh-token-canary")},
	}}
	logger, logs := fencetest.Logger(t)
	r, err := drivers.Registry(f, config.Defaults(), logger)
	if _, statErr := os.Stat(config.DefaultBMHCAFile); statErr == nil {
		if err != nil {
			t.Fatalf("Registry: %v", err)
		}
	} else if err == nil || errors.Is(err, fence.ErrNotAvailable) || !strings.Contains(err.Error(), "fence bmh-1 via bmh: configure: ca_file") {
		t.Fatalf("err = %v, want only bmh-1's missing CA file", err)
	}
	for _, tt := range []struct{ host, driver string }{{"rf-0.example.com", "redfish"}, {"ipmi-0", "ipmi"}, {"noop-0", "noop"}, {"bmh-0.example.com", "bmh"}} {
		fc, err := r.Fencer(tt.host)
		if err != nil {
			t.Fatalf("Fencer(%s): %v", tt.host, err)
		}
		if fc.Driver() != tt.driver {
			t.Fatalf("Fencer(%s).Driver() = %s", tt.host, fc.Driver())
		}
	}
	fc, _ := r.Fencer("rf-0")
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(30*time.Second))
	defer cancel()
	if st, err := fc.PowerState(ctx); err != nil || st != fence.PowerOn {
		t.Fatalf("PowerState through the registry = %v, %v", st, err)
	}
	fencetest.CheckNoSecret(t, []string{"calvin-canary", "bmh-token-canary"}, logs(), fmt.Sprint(err))
}
