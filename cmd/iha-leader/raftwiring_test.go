package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/pkg/novasim"
)

// TestHalfARaftTLSSetIsRefusedNamingTheKeys: RAFT_TLS_CERT without its key
// and CA stops the daemon before it opens Raft, and the error names the
// keys to set.
func TestHalfARaftTLSSetIsRefusedNamingTheKeys(t *testing.T) {
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ca := newPKI(t, "ca")
	cert, _ := ca.issue(t, "ctl-1")
	c := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	c.writeConfig(t, sim, map[string]string{"RAFT_TLS_CERT": cert})
	for k, v := range map[string]string{
		"INSTANCEHA_CONFIG_PATH": filepath.Join(c.confDir, "config.yaml"),
		"CLOUDS_CONFIG_PATH":     filepath.Join(c.confDir, "clouds.yaml"),
		"SECURE_CONFIG_PATH":     filepath.Join(c.confDir, "secure.yaml"),
		"FENCING_CONFIG_PATH":    filepath.Join(c.confDir, "fencing.yaml"),
		"OS_CLOUD":               "overcloud", "NOTIFY_SOCKET": "",
	} {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, nil, func(string) string { return "" }, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "RAFT_TLS_CERT") || !strings.Contains(errOut.String(), "RAFT_TLS_KEY and RAFT_TLS_CA must be set together") {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut.String())
	}
	if strings.Contains(errOut.String(), "raft bootstrapped") {
		t.Fatal("Raft was opened with half a TLS set")
	}
}
