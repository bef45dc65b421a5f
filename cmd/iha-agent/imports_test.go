package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentLinksNoCredentialHolder enforces DESIGN's rule: the agent holds
// no Nova or BMC credentials, so it must not even link the code that uses
// them. It fails if iha-agent depends on any of these packages.
func TestAgentLinksNoCredentialHolder(t *testing.T) {
	forbidden := []string{
		"github.com/ihaproject/iha/leader",
		"github.com/ihaproject/iha/fence",
		"github.com/ihaproject/iha/pkg/nova",
		"github.com/ihaproject/iha/pkg/config", // imports gophercloud, holds BMC passwords
		"github.com/gophercloud/",
		"github.com/stmcginnis/gofish",
		"github.com/bougou/go-ipmi",
		"k8s.io/client-go",
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned too little to be trusted: %v", deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
				t.Errorf("iha-agent depends on %s (forbidden: %s)", d, f)
			}
		}
	}
}

// TestOnlyGossipImportsMemberlist: the agent and its main use the mesh
// through package gossip only.
func TestOnlyGossipImportsMemberlist(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", ".", "../../agent/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "hashicorp/memberlist") {
		t.Fatalf("a package other than gossip imports memberlist:\n%s", out)
	}
}
