package novasim_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/novasim"
	"github.com/ihaproject/iha/pkg/novasim/contract"
)

// TestContract runs the contract suite against novasim, always, and
// against a real Nova when NOVA_CONTRACT_URL is set (the lab sets it).
func TestContract(t *testing.T) {
	t.Run("novasim", func(t *testing.T) {
		t.Parallel()
		contract.Run(t, newSimHarness(t))
	})
	if os.Getenv("NOVA_CONTRACT_URL") != "" {
		t.Run("real-nova", func(t *testing.T) {
			t.Parallel()
			contract.Run(t, newRealHarness(t))
		})
	}
}

// simHarness runs the suite on a simulator with a fast heartbeat.
type simHarness struct {
	sim           *novasim.Sim
	image, flavor string
}

func newSimHarness(t *testing.T) *simHarness {
	sim, err := novasim.New(novasim.Options{
		ReportInterval:      time.Second,
		ServiceDownTime:     3 * time.Second,
		StartupDelay:        500 * time.Millisecond,
		EvacuationDelay:     300 * time.Millisecond,
		RestartCleanupDelay: 200 * time.Millisecond,
		RestartCleanupStep:  500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	for _, h := range []string{"compute-0", "compute-1", "compute-2"} {
		sim.AddCompute(h, "nova")
	}
	sim.AddScheduler("controller-0")
	return &simHarness{
		sim:    sim,
		image:  sim.AddImage(novasim.Image{Name: "cirros"}),
		flavor: sim.AddFlavor(novasim.Flavor{Name: "m1.contract", VCPUs: 1, RAM: 128, Disk: 1}),
	}
}

func (h *simHarness) ComputeURL() string { return h.sim.ComputeURL() }
func (h *simHarness) Computes() []string { return []string{"compute-0", "compute-1", "compute-2"} }
func (h *simHarness) ImageID() string    { return h.image }
func (h *simHarness) FlavorID() string   { return h.flavor }
func (h *simHarness) WaitTimeout() time.Duration {
	return 20 * time.Second * time.Duration(scale())
}
func (h *simHarness) StopCompute(t *testing.T, host string)  { h.sim.StopCompute(host) }
func (h *simHarness) StartCompute(t *testing.T, host string) { h.sim.StartCompute(host) }

func (h *simHarness) Token(t *testing.T) string {
	t.Helper()
	body := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"secret"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}`
	resp, err := http.Post(h.sim.AuthURL()+"/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("novasim token: HTTP %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Subject-Token")
}

// scale stretches timeouts on slow machines (IHA_TEST_TIMEOUT_SCALE, default 1).
func scale() int { return max(1, int(testkit.Factor(1))) }

// realHarness drives a real Nova described by the environment:
//
//	NOVA_CONTRACT_URL       compute endpoint, e.g. http://127.0.0.1:8774/v2.1
//	NOVA_CONTRACT_TOKEN     X-Auth-Token with the admin role, e.g. admin:admin
//	NOVA_CONTRACT_COMPUTES  comma-separated compute hosts (at least 3)
//	NOVA_CONTRACT_CTL       command run as `$CTL stop|start HOST`
//	NOVA_CONTRACT_IMAGE     image id to boot
//	NOVA_CONTRACT_FLAVOR    flavor id to boot (gets an extra spec iha:contract=yes)
//	NOVA_CONTRACT_WAIT      optional per-step timeout, default 3m
type realHarness struct {
	url, token, image, flavor string
	computes                  []string
	ctl                       []string
	wait                      time.Duration
}

func newRealHarness(t *testing.T) *realHarness {
	h := &realHarness{
		url: os.Getenv("NOVA_CONTRACT_URL"), token: os.Getenv("NOVA_CONTRACT_TOKEN"),
		image: os.Getenv("NOVA_CONTRACT_IMAGE"), flavor: os.Getenv("NOVA_CONTRACT_FLAVOR"),
		ctl: strings.Fields(os.Getenv("NOVA_CONTRACT_CTL")), wait: 3 * time.Minute,
	}
	for _, c := range strings.Split(os.Getenv("NOVA_CONTRACT_COMPUTES"), ",") {
		if c = strings.TrimSpace(c); c != "" {
			h.computes = append(h.computes, c)
		}
	}
	if v := os.Getenv("NOVA_CONTRACT_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("NOVA_CONTRACT_WAIT: %v", err)
		}
		h.wait = d
	}
	if h.token == "" || len(h.ctl) == 0 || h.image == "" || h.flavor == "" || len(h.computes) < 3 {
		t.Fatal("NOVA_CONTRACT_URL is set but NOVA_CONTRACT_TOKEN, _CTL, _IMAGE, _FLAVOR or 3 _COMPUTES are missing")
	}
	return h
}

func (h *realHarness) ComputeURL() string         { return h.url }
func (h *realHarness) Token(*testing.T) string    { return h.token }
func (h *realHarness) Computes() []string         { return h.computes }
func (h *realHarness) ImageID() string            { return h.image }
func (h *realHarness) FlavorID() string           { return h.flavor }
func (h *realHarness) WaitTimeout() time.Duration { return h.wait }

func (h *realHarness) StopCompute(t *testing.T, host string)  { h.run(t, "stop", host) }
func (h *realHarness) StartCompute(t *testing.T, host string) { h.run(t, "start", host) }

func (h *realHarness) run(t *testing.T, verb, host string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(append([]string{}, h.ctl[1:]...), verb, host)
	out, err := exec.CommandContext(ctx, h.ctl[0], args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s %s: %v\n%s", strings.Join(h.ctl, " "), verb, host, err, out)
	}
}
