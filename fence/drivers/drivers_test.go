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
	"github.com/ihaproject/iha/pkg/secret"
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
			Passwd: secret.New("calvin-canary"), UUID: config.DefaultRedfishUUID},
		{Name: "ipmi-0", Agent: "ipmi", IPAddr: "127.0.0.1", IPPort: 6230, Login: "admin", Passwd: secret.New("x")},
		{Name: "noop-0", Agent: "noop"},
		{Name: "bmh-0", Agent: "bmh", Host: "bmh-0", Namespace: "openstack", Token: secret.New("bmh-token-canary"),
			APIURL: "https://127.0.0.1:6443", CAFile: ca},
		// bmh without ca_file outside a pod: the service-account CA is
		// missing, a configuration error at load time.
		{Name: "bmh-1", Agent: "bmh", Host: "bmh-1", Namespace: "openstack", Token: secret.New("bmh-token-canary")},
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

// Settings is the one place config.Settings becomes what drivers read: the
// keys must arrive, and SSL_VERIFY's default must stay "verify".
func TestSettingsCarryTheDriverKeys(t *testing.T) {
	if got := drivers.Settings(config.Defaults()); got.TLS.Insecure || got.Timeout != config.Defaults().FencingTimeout {
		t.Fatalf("Settings(Defaults) = %+v, want verification on and FENCING_TIMEOUT", got)
	}
	s := config.Defaults()
	s.FencingTimeout = 45 * time.Second
	s.SSLVerify = false
	s.SSLCABundle, s.SSLCertPath, s.SSLKeyPath = "/ca.pem", "/c.pem", "/k.pem"
	want := fence.Settings{Timeout: 45 * time.Second, TLS: fence.TLS{Insecure: true, CABundle: "/ca.pem", CertPath: "/c.pem", KeyPath: "/k.pem"}}
	if got := drivers.Settings(s); got != want {
		t.Fatalf("Settings = %+v, want %+v", got, want)
	}

	// Through the registry: FENCING_TIMEOUT reaches an ipmi entry without
	// a timeout, SSL_VERIFY false reaches redfish (which warns at build).
	f := config.Fencing{Hosts: []config.FenceHost{
		{Name: "ipmi-0", Agent: "ipmi", IPAddr: "127.0.0.1", IPPort: 6230, Login: "admin", Passwd: secret.New("x")},
		{Name: "rf-0", Agent: "redfish", IPAddr: "127.0.0.1", IPPort: 8443, TLS: true, Login: "root", Passwd: secret.New("x")},
	}}
	for _, verify := range []bool{true, false} {
		s.SSLVerify = verify
		logger, logs := fencetest.Logger(t)
		r, err := drivers.Registry(f, s, logger)
		if err != nil {
			t.Fatal(err)
		}
		fc, err := r.Fencer("ipmi-0")
		if err != nil {
			t.Fatal(err)
		}
		if tf, ok := fc.(interface{ Timeout() time.Duration }); !ok || tf.Timeout() != 45*time.Second {
			t.Fatalf("ipmi fencer %T does not carry FENCING_TIMEOUT 45s", fc)
		}
		if warned := strings.Contains(logs(), "verification is off"); warned == verify {
			t.Fatalf("SSL_VERIFY %v: warning about verification off = %v\n%s", verify, warned, logs())
		}
	}
}
