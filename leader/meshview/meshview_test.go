package meshview

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/kdump"
)

// fakeGossip is a mesh whose members the test sets.
type fakeGossip struct {
	members []gossip.Member
	verify  bool
	events  chan gossip.Event
	notices chan kdump.Notice
}

func (f *fakeGossip) Name() string                      { return "ctl-1" }
func (f *fakeGossip) Members() []gossip.Member          { return f.members }
func (f *fakeGossip) VerifiesIdentity() bool            { return f.verify }
func (f *fakeGossip) ClaimTTL() time.Duration           { return 30 * time.Second }
func (f *fakeGossip) HealthScore() int                  { return 0 }
func (f *fakeGossip) Stats() gossip.Stats               { return gossip.Stats{} }
func (f *fakeGossip) Events() <-chan gossip.Event       { return f.events }
func (f *fakeGossip) KdumpNotices() <-chan kdump.Notice { return f.notices }

func compute(name, advertised, state string, since time.Time, claim string, claimAt time.Time) gossip.Member {
	return gossip.Member{Name: name, Addr: name + ":7946", Meta: gossip.Meta{Role: gossip.RoleCompute, NovaHost: advertised},
		State: gossip.State(state), Since: since, Joined: since, Claim: gossip.Claim{Host: claim, At: claimAt}}
}

// TestAdapterSnapshotTwoClaimsOneHost is Snapshot's rule for the
// members that speak for a host, without a mesh: with identities checked,
// only a current claim counts (the advertised host does not); two
// members speaking for one host make it contested whichever is alive; a
// dead claimant stops counting after contestWindow.
func TestAdapterSnapshotTwoClaimsOneHost(t *testing.T) {
	now := time.Now()
	g := &fakeGossip{verify: true}
	n := New(g, true, slog.New(slog.NewTextHandler(io.Discard, nil)))

	g.members = []gossip.Member{
		compute("a", "c1", leader.MeshAlive, now.Add(-time.Minute), "c1", now.Add(-time.Second)),
		// an impostor advertising c1 with no claim: counts for no host
		compute("imp", "c1", leader.MeshAlive, now.Add(-time.Minute), "", time.Time{}),
		{Name: "ctl-2", Meta: gossip.Meta{Role: gossip.RoleController}, State: gossip.StateAlive},
	}
	snap := n.Snapshot()
	if len(snap) != 1 || snap["c1"].State != leader.MeshAlive || snap["c1"].Node != "a" {
		t.Fatalf("one proven member: %+v", snap)
	}
	if s := n.Summary(); s.Unverified != 1 || s.Contested != 0 || s.Members != 3 {
		t.Fatalf("summary: %+v", s)
	}

	// The proven c1 member died; another proves c1 and is alive: contested
	// (the live one never wins by being live), since the older Since.
	died := now.Add(-20 * time.Second)
	g.members = []gossip.Member{
		compute("a", "c1", leader.MeshDead, died, "c1", now.Add(-30*time.Second)),
		compute("b", "c1", leader.MeshAlive, now.Add(-10*time.Second), "c1", now.Add(-time.Second)),
	}
	c := n.Snapshot()["c1"]
	if c.State != leader.MeshContested || !c.Since.Equal(died) || len(c.Claimants) != 2 ||
		!strings.HasPrefix(c.Claimants[0], "a (dead") || !strings.HasPrefix(c.Claimants[1], "b (alive") {
		t.Fatalf("two claims on c1: %+v", c)
	}
	if s := n.Summary(); s.Contested != 1 {
		t.Fatalf("summary: %+v", s)
	}

	// Dead for longer than contestWindow: the live claimant speaks alone.
	g.members[0].Since = now.Add(-contestWindow - time.Minute)
	if m := n.Snapshot()["c1"]; m.State != leader.MeshAlive || m.Node != "b" {
		t.Fatalf("after contestWindow: %+v", m)
	}

	// Both left: the latest speaks for the host.
	g.members = []gossip.Member{
		compute("a", "c1", leader.MeshLeft, now.Add(-time.Minute), "c1", now.Add(-2*time.Minute)),
		compute("b", "c1", leader.MeshLeft, now.Add(-time.Second), "c1", now.Add(-2*time.Minute)),
	}
	if m := n.Snapshot()["c1"]; m.State != leader.MeshLeft || m.Node != "b" {
		t.Fatalf("both left: %+v", m)
	}

	// Without identities (GOSSIP_INSECURE) the advertised host counts: two
	// live members advertising c1 contest it.
	g.verify = false
	g.members = []gossip.Member{
		compute("a", "c1", leader.MeshAlive, now.Add(-time.Minute), "", time.Time{}),
		compute("imp", "c1", leader.MeshAlive, now.Add(-time.Minute), "", time.Time{}),
	}
	if m := n.Snapshot()["c1"]; m.State != leader.MeshContested {
		t.Fatalf("insecure, two advertisers: %+v", m)
	}
}

// TestAdapterRunRecordsDeathsAndKdumpNotices: a dead compute wakes the
// reconciler and its accusers reach the snapshot; a relayed kdump notice
// is believed only from a live member of an authenticated mesh.
func TestAdapterRunRecordsDeathsAndKdumpNotices(t *testing.T) {
	now := time.Now()
	g := &fakeGossip{events: make(chan gossip.Event), notices: make(chan kdump.Notice)}
	n := New(g, true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	g.members = []gossip.Member{compute("a", "c1", leader.MeshDead, now, "", time.Time{}), compute("b", "c2", leader.MeshAlive, now, "", time.Time{})}
	g.events <- gossip.Event{Kind: gossip.KindDead, Node: "a", Meta: gossip.Meta{Role: gossip.RoleCompute, NovaHost: "c1"},
		Accusers: []string{"b", "ctl-1"}, Confirmations: 2}
	select {
	case <-n.Wake():
	case <-time.After(10 * time.Second):
		t.Fatal("a dead compute did not wake the reconciler")
	}
	if m := n.Snapshot()["c1"]; m.State != leader.MeshDead || m.Confirmations != 2 || strings.Join(m.Accusers, ",") != "b,ctl-1" {
		t.Fatalf("dead member: %+v", m)
	}

	g.notices <- kdump.Notice{Host: "c1", SourceAddr: "127.0.0.1", Relayer: "b"}
	<-n.Wake()
	g.notices <- kdump.Notice{Host: "c1", SourceAddr: "127.0.0.1", Relayer: "gone"}
	<-n.Wake()
	var trusted, untrusted int
	for _, kn := range n.KdumpLog().Notices("c1") {
		if kn.Untrusted == "" {
			trusted++
		} else if strings.Contains(kn.Untrusted, "gone is not a live member") {
			untrusted++
		}
	}
	if trusted != 1 || untrusted != 1 {
		t.Fatalf("kdump notices: %d trusted, %d from a non-member; want 1 and 1", trusted, untrusted)
	}
}
