package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/identity"
)

// scrapeMetrics reads url and parses it with Prometheus' text parser.
func scrapeMetrics(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "|" + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out, nil
}

// TestAgentServesMetrics runs a real iha-agent with metrics_listen on
// loopback, joined to a controller, and checks what an on-call reads:
// the mesh as the agent sees it, fence_kdump packets by outcome (a real
// UDP packet with a bad magic), and the gate's answers recorded by real
// `iha-agent gate` runs (one allowed, one answered with a 500).
func TestAgentServesMetrics(t *testing.T) {
	keyring, keys := testKeyring(t)
	ctl, _ := startController(t, keys)
	dir := t.TempDir()
	metricsAddr := testaddr.Loopback(t)
	kdumpAddr := testaddr.Loopback(t)
	gateFile := filepath.Join(dir, "gate", "answers.json")
	if err := os.MkdirAll(filepath.Dir(gateFile), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("node_name: metered\nnova_host: compute-m\nbind: 127.0.0.7:0\njoin: [%s]\n"+
		"kdump_listen: %q\nstate_dir: %s\nmetrics_listen: %s\ngate_stats_file: %s\nkeyring: %s\nhost_key: %s\n",
		ctl.Addr(), kdumpAddr, filepath.Join(dir, "state"), metricsAddr, gateFile, keyring, testHostKey(t, "compute-m")))
	startAgent(t, nil, "-config", cfg)
	url := "http://" + metricsAddr + "/metrics"
	var got map[string]float64
	testkit.WaitFor(t, scale(15*time.Second), "the agent joined, as its /metrics says", func() bool {
		m, err := scrapeMetrics(url)
		if err == nil {
			got = m
		}
		return err == nil && m["iha_agent_mesh_joined"] == 1 && m["iha_agent_controllers_alive"] == 1
	})
	if got["iha_agent_mesh_members|state=alive"] != 2 || got["iha_agent_kdump_listening"] != 1 {
		t.Errorf("alive members %v (want 2), kdump listening %v", got["iha_agent_mesh_members|state=alive"], got["iha_agent_kdump_listening"])
	}

	// A fence_kdump packet with a bad magic is read and dropped.
	c, err := net.Dial("udp", kdumpAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte{1, 2, 3, 4, 1, 0, 0, 0})
	c.Close()
	testkit.WaitFor(t, scale(5*time.Second), "the bad packet counted", func() bool {
		m, err := scrapeMetrics(url)
		return err == nil && m["iha_agent_kdump_packets_received_total"] == 1 && m["iha_agent_kdump_packets_total|outcome=bad_magic"] == 1
	})

	// Two gate runs: one controller allows; one answers 500 (unverified)
	// before a second one allows.
	allow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nonce := r.URL.Query().Get("nonce")
		mac := identity.GateMAC(identity.HostKey(testCluster, "compute-m"), "compute-m", true, "no unfinished recovery", nonce)
		fmt.Fprintf(w, `{"host":"compute-m","allow":true,"reason":"no unfinished recovery","nonce":%q,"mac":%q}`, nonce, mac)
	}))
	defer allow.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "client sent an HTTP request to an HTTPS server", http.StatusBadRequest)
	}))
	defer broken.Close()
	for _, ctls := range []string{allow.URL, broken.URL + "," + allow.URL} {
		var out bytes.Buffer
		args := []string{"gate", "-config", cfg, "-state-dir", t.TempDir(), "-timeout", "5s", "-interval", "100ms", "-controllers", ctls}
		if code := run(context.Background(), args, &out, &out); code != 0 {
			t.Fatalf("gate via %s: code %d\n%s", ctls, code, out.String())
		}
	}
	m, err := scrapeMetrics(url)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"allow": 2, "unverified": 1, "refuse": 0, "unreachable": 0}
	for r, n := range want {
		if g := m["iha_agent_gate_answers_total|result="+r]; g != n {
			t.Errorf("gate answers %s = %v, want %v", r, g, n)
		}
	}
	if !strings.HasPrefix(metricsAddr, "127.") {
		t.Fatalf("metrics address %s", metricsAddr)
	}
}
