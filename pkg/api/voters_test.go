package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/ihaproject/iha/pkg/secret"
)

func TestRemoveVoterIsAWriteThatReachesTheBackendOnce(t *testing.T) {
	rw, ro := secret.New(canaryRW), secret.New(canaryRO)
	cases := []struct {
		name          string
		path          string
		token, body   string
		want          int
		wantMutations int
		wantHas       string
	}{
		{"without a token is 401", "/v1/cluster/voters/ctl-3", "", "", 401, 0, "API_TOKEN"},
		{"with the read-only token is 403", "/v1/cluster/voters/ctl-3", canaryRO, "", 403, 0, "only read"},
		{"with the write token it reaches the leader", "/v1/cluster/voters/ctl-3", canaryRW, `{"reason":"decommissioned"}`, 200, 1, `"voter": "ctl-3"`},
		{"an id that is not a node name is 400", "/v1/cluster/voters/..x", canaryRW, "", 400, 0, `"parameter": "id"`},
		{"the last voter is 409 with the reason", "/v1/cluster/voters/ctl-last", canaryRW, "", 409, 0, "last voter"},
		{"an unknown voter is 404", "/v1/cluster/voters/ctl-gone", canaryRW, "", 404, 0, "no voter ctl-gone"},
		{"a body with an unknown field is 400", "/v1/cluster/voters/ctl-3", canaryRW, `{"force":true}`, 400, 0, `"parameter": "body"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newFake("n1", true)
			url := serve(t, b, Config{Token: rw, ReadToken: ro})
			code, body := call(t, http.MethodDelete, url+c.path, c.token, c.body)
			if code != c.want || !strings.Contains(body, c.wantHas) {
				t.Fatalf("DELETE %s: %d %s, want %d with %q", c.path, code, body, c.want, c.wantHas)
			}
			m := b.muts()
			if len(m) != c.wantMutations {
				t.Fatalf("%d mutations reached the backend, want %d", len(m), c.wantMutations)
			}
			if len(m) == 1 && (m[0].Kind != MutRemoveVoter || m[0].Voter != "ctl-3" || m[0].Reason != "decommissioned" || m[0].Host != "") {
				t.Fatalf("backend got %+v", m[0])
			}
		})
	}
	// Other methods on the path are not a removal.
	b := newFake("n1", true)
	url := serve(t, b, Config{Token: rw})
	if code, _ := call(t, http.MethodPost, url+"/v1/cluster/voters/ctl-3", canaryRW, ""); code == 200 || len(b.muts()) != 0 {
		t.Fatalf("POST on a voter answered %d and reached the backend %d time(s)", code, len(b.muts()))
	}
}

func TestClientRemovesAVoterThroughAFollower(t *testing.T) {
	tok := secret.New(canaryRW)
	lead := newFake("leader", true)
	leadURL := serve(t, lead, Config{Token: tok})
	fol := newFake("follower", false)
	fol.leaderAPI = strings.TrimPrefix(leadURL, "http://")
	folURL := serve(t, fol, Config{Token: tok})

	c := &Client{Addrs: []string{folURL}, Token: canaryRW, Actor: "alice@ops"}
	res, err := c.RemoveVoter(context.Background(), "ctl-3", "rack moved")
	if err != nil || !res.OK || res.Voter != "ctl-3" || res.Kind != string(MutRemoveVoter) || res.Freshness.Node != "leader" {
		t.Fatalf("RemoveVoter via a follower: %+v %v", res, err)
	}
	m := lead.muts()
	if len(m) != 1 || m[0].Voter != "ctl-3" || !strings.HasPrefix(m[0].By, "alice@ops from ") {
		t.Fatalf("leader got %+v", m)
	}
	if len(fol.muts()) != 0 {
		t.Fatal("the follower removed a voter itself")
	}
	// Mutate with the kind goes the same way.
	if _, err := c.Mutate(context.Background(), MutRemoveVoter, "ctl-4", ""); err != nil || len(lead.muts()) != 2 {
		t.Fatalf("Mutate(remove-voter): %v, leader has %d", err, len(lead.muts()))
	}
	_, err = c.RemoveVoter(context.Background(), "ctl-last", "")
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusConflict || !strings.Contains(se.Message, "last voter") {
		t.Fatalf("removing the last voter: %v, want a 409 that says why", err)
	}
}
