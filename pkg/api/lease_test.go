package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/lease"
)

func TestLeaseEndpoint(t *testing.T) {
	var got []lease.Request
	grant := func(_ context.Context, r lease.Request) (lease.Grant, error) {
		got = append(got, r)
		switch r.Nonce {
		case "bad-sig":
			return lease.Grant{}, fmt.Errorf("%w: request of %s", lease.ErrSignature, r.Host)
		case "bad":
			return lease.Grant{}, fmt.Errorf("%w: seq must be positive", lease.ErrBadRequest)
		case "nokey":
			return lease.Grant{}, fmt.Errorf("%w: no cluster key", lease.ErrUnavailable)
		}
		return lease.Grant{Host: r.Host, Granted: true, Nonce: r.Nonce}, nil
	}
	leaderURL := serve(t, newFake("n1", true), Config{Lease: grant})
	follower := newFake("n2", false)
	follower.leaderAPI = strings.TrimPrefix(leaderURL, "http://")
	followerURL := serve(t, follower, Config{Lease: func(context.Context, lease.Request) (lease.Grant, error) {
		t.Error("a follower granted a lease itself")
		return lease.Grant{}, nil
	}})
	none := serve(t, newFake("n3", true), Config{})
	body := func(host, nonce string) string {
		b, _ := json.Marshal(lease.Request{Host: host, Boot: "b", Seq: 1, Sent: time.Now(), Nonce: nonce, MAC: "m"})
		return string(b)
	}
	for _, tc := range []struct {
		name, url, body string
		code            int
		want            string
	}{
		{"granted", leaderURL + lease.Path + "compute-1", body("compute-1", "ok"), http.StatusOK, `"granted": true`},
		{"forwarded by a follower", followerURL + lease.Path + "compute-1", body("compute-1", "ok"), http.StatusOK, `"granted": true`},
		{"path and body disagree", leaderURL + lease.Path + "compute-2", body("compute-1", "ok"), http.StatusBadRequest, "path names"},
		{"unknown field", leaderURL + lease.Path + "compute-1", `{"host":"compute-1","armd":true}`, http.StatusBadRequest, "unknown field"},
		{"trailing data", leaderURL + lease.Path + "compute-1", body("compute-1", "ok") + "{}", http.StatusBadRequest, "not a lease request"},
		{"a bad signature", leaderURL + lease.Path + "compute-1", body("compute-1", "bad-sig"), http.StatusForbidden, "signature"},
		{"a bad request", leaderURL + lease.Path + "compute-1", body("compute-1", "bad"), http.StatusBadRequest, "seq"},
		{"no cluster key", leaderURL + lease.Path + "compute-1", body("compute-1", "nokey"), http.StatusServiceUnavailable, "cluster key"},
		{"not served", none + lease.Path + "compute-1", body("compute-1", "ok"), http.StatusServiceUnavailable, "no watchdog leases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := call(t, http.MethodPost, tc.url, "", tc.body)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("%d %s, want %d with %q", code, out, tc.code, tc.want)
			}
		})
	}
}
