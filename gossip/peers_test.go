package gossip

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"
)

func TestAskPeersCollectsTheAnswersOfTheLiveMembersOfARole(t *testing.T) {
	c := startCluster(t, 4, FastProfile(), slog.LevelWarn) // node-0 controller, node-1..3 computes
	for i, m := range c.meshes[1:] {
		m.SetAnswerer(func() []byte { return []byte{'A' + byte(i)} })
	}
	c.meshes[0].SetAnswerer(func() []byte { t.Error("a controller was asked"); return []byte("x") })
	ans, asked := c.meshes[1].AskPeers(context.Background(), RoleCompute, scale(2*time.Second))
	if asked != 2 || len(ans) != 2 {
		t.Fatalf("asked %d, answers %+v", asked, ans)
	}
	got := []string{ans[0].Node + string(ans[0].Data), ans[1].Node + string(ans[1].Data)}
	slices.Sort(got)
	if !slices.Equal(got, []string{"node-2B", "node-3C"}) {
		t.Fatalf("answers %v", got)
	}
	// A member that does not answer (nil answerer) and one cut off are
	// simply missing once the timeout passes.
	c.meshes[2].SetAnswerer(nil)
	c.net.Isolate("node-3", true)
	start := time.Now()
	ans, asked = c.meshes[1].AskPeers(context.Background(), RoleCompute, 300*time.Millisecond)
	if len(ans) != 0 || asked != 2 {
		t.Fatalf("answers %+v from %d asked", ans, asked)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("returned after %v, before its timeout", took)
	}
	// An answer too long for a packet is not sent.
	c.net.Isolate("node-3", false)
	c.meshes[3].SetAnswerer(func() []byte { return make([]byte, maxAnswer+1) })
	if ans, _ := c.meshes[1].AskPeers(context.Background(), RoleCompute, 300*time.Millisecond); len(ans) != 0 {
		t.Fatalf("an oversized answer arrived: %d", len(ans))
	}
}
