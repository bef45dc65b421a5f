package leader

import (
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// TestJudge has one case per row of DESIGN.md's verdict table, plus the
// updated_at bump caused by our own force-down and the modes.
func TestJudge(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 30, 0, time.UTC)
	up := func(updated time.Time) nova.Service {
		return nova.Service{Host: "h", Status: "enabled", State: "up", UpdatedAt: updated}
	}
	down := nova.Service{Host: "h", Status: "enabled", State: "down", UpdatedAt: now.Add(-70 * time.Second)}
	deadAt := now.Add(-15 * time.Second) // 12:00:15
	base := VerdictInput{Mode: "both", Now: now, Delta: 30 * time.Second, ReportInterval: 10 * time.Second, Margin: 2 * time.Second}
	cases := []struct {
		name string
		mod  func(*VerdictInput)
		want Verdict
	}{
		{"alive + up is healthy", func(in *VerdictInput) { in.MeshState, in.Service = MeshAlive, up(now.Add(-3*time.Second)) }, VerdictHealthy},
		{"alive + down is nova-compute broken on a live host, no evacuation", func(in *VerdictInput) { in.MeshState, in.Service = MeshAlive, down }, VerdictNovaBroken},
		{"alive + stale is nova-compute broken too", func(in *VerdictInput) { in.MeshState, in.Service = MeshAlive, up(now.Add(-45*time.Second)) }, VerdictNovaBroken},
		{"dead + heartbeat still advancing waits (cut off from the mesh only)", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, deadAt, up(now.Add(-2*time.Second))
		}, VerdictWait},
		{"dead + no heartbeat since the mesh lost it is failed", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, deadAt, up(deadAt.Add(-4*time.Second).Truncate(time.Second))
		}, VerdictFailed},
		{"dead + heartbeat in the same second as the death is not advancing", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, deadAt.Add(700*time.Millisecond), up(deadAt)
		}, VerdictFailed},
		{"dead but one report interval has not passed yet: wait", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-5*time.Second), up(now.Add(-9*time.Second).Truncate(time.Second))
		}, VerdictWait},
		{"left + down falls back to InstanceHA's rule", func(in *VerdictInput) { in.MeshState, in.Service = MeshLeft, down }, VerdictInstanceHA},
		{"never seen + stale falls back to InstanceHA's rule", func(in *VerdictInput) { in.MeshState, in.Service = MeshUnknown, up(now.Add(-31*time.Second)) }, VerdictInstanceHA},
		{"never seen + up is healthy", func(in *VerdictInput) { in.MeshState, in.Service = MeshUnknown, up(now.Add(-1*time.Second)) }, VerdictHealthy},
		{"our own force-down bumps updated_at but a forced-down host is never a new failure", func(in *VerdictInput) {
			s := up(now)
			s.ForcedDown, s.State = true, "down"
			in.MeshState, in.MeshSince, in.Service = MeshDead, deadAt, s
		}, VerdictHealthy},
		{"mode gossip: dead is failed at once", func(in *VerdictInput) {
			in.Mode, in.MeshState, in.MeshSince, in.Service = "gossip", MeshDead, now.Add(-time.Second), up(now)
		}, VerdictFailed},
		{"mode nova ignores the mesh", func(in *VerdictInput) {
			in.Mode, in.MeshState, in.MeshSince, in.Service = "nova", MeshDead, deadAt, up(now.Add(-2*time.Second))
		}, VerdictHealthy},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := base
			c.mod(&in)
			got, why, _ := Judge(in)
			if got != c.want {
				t.Fatalf("got %s (%s), want %s", got, why, c.want)
			}
			if strings.TrimSpace(why) == "" {
				t.Fatal("every verdict must explain itself")
			}
		})
	}
}
