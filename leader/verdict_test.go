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
	base := VerdictInput{Mode: "both", Now: now, Delta: 30 * time.Second, ReportInterval: 10 * time.Second, Margin: 2 * time.Second,
		KdumpTimeout: 30 * time.Second}
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
		{"dead long after its last report is failed the moment the mesh says so", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-100*time.Millisecond), up(now.Add(-13*time.Second))
		}, VerdictFailed},
		{"dead + heartbeat one second after the mesh's verdict: cut off from the mesh, wait", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, deadAt.Add(300*time.Millisecond), up(deadAt.Add(time.Second))
		}, VerdictWait},
		{"dead + heard after the mesh's verdict, then stale for DELTA: InstanceHA's rule", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-40*time.Second), up(now.Add(-31*time.Second))
		}, VerdictInstanceHA},
		{"dead + a service that never reported waits one interval from the mesh's verdict", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-5*time.Second), up(time.Time{})
		}, VerdictWait},
		{"mode nova with the mesh wired: a stale host whose agent is alive is not fenced", func(in *VerdictInput) {
			in.Mode, in.MeshState, in.Service = "nova", MeshAlive, up(now.Add(-31*time.Second))
		}, VerdictNovaBroken},
		{"mode nova with the mesh wired: a suspect agent holds it too", func(in *VerdictInput) {
			in.Mode, in.MeshState, in.Service = "nova", MeshSuspect, down
		}, VerdictNovaBroken},
		{"mode nova: a stale host whose agent is dead is InstanceHA's rule", func(in *VerdictInput) {
			in.Mode, in.MeshState, in.MeshSince, in.Service = "nova", MeshDead, deadAt, up(now.Add(-31*time.Second))
		}, VerdictInstanceHA},
		{"mode nova: a stale host with no agent is InstanceHA's rule", func(in *VerdictInput) {
			in.Mode, in.MeshState, in.Service = "nova", MeshUnknown, up(now.Add(-31*time.Second))
		}, VerdictInstanceHA},
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
		// Partition guard: the mesh lost many computes at once.
		{"partition guard: dead + no heartbeat waits for DELTA", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Partition, in.Service = MeshDead, deadAt, true, up(deadAt.Add(-4*time.Second).Truncate(time.Second))
		}, VerdictWait},
		{"partition guard: dead + stale for DELTA is InstanceHA's rule", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Partition, in.Service = MeshDead, deadAt, true, up(now.Add(-31*time.Second))
		}, VerdictInstanceHA},
		{"partition guard does not apply in mode nova", func(in *VerdictInput) {
			in.Mode, in.MeshState, in.MeshSince, in.Partition, in.Service = "nova", MeshDead, deadAt, true, up(now.Add(-31*time.Second))
		}, VerdictInstanceHA},
		// kdump (CHECK_KDUMP, notice within KDUMP_TIMEOUT).
		{"kdump + dead + not heard since is kdump at once, without one more report", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-2*time.Second), up(now.Add(-5*time.Second).Truncate(time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", From: "127.0.0.9", At: now.Add(-time.Second)}
		}, VerdictKdump},
		{"kdump + dead but nova heard it since is not enough: wait", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-3*time.Second), up(now.Add(-time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictWait},
		{"kdump + suspect only is not enough", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshSuspect, now.Add(-2*time.Second), up(now.Add(-5*time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictHealthy},
		{"kdump + agent alive is ignored", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshAlive, up(now.Add(-2*time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictKdumpIgnored},
		{"kdump + no agent needs nova's DELTA rule", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, up(now.Add(-31*time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictKdump},
		{"kdump + no agent + nova up is healthy", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, up(now.Add(-2*time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictHealthy},
		{"kdump + partition guard needs nova's DELTA rule", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Partition, in.Service = MeshDead, deadAt, true, up(deadAt.Add(-4*time.Second).Truncate(time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictWait},
		{"an old kdump notice (beyond KDUMP_TIMEOUT) is not a witness", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-2*time.Second), up(now.Add(-5*time.Second).Truncate(time.Second))
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-31 * time.Second)}
		}, VerdictWait},
		{"kdump notices are not looked at without CHECK_KDUMP", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, now.Add(-2*time.Second), up(now.Add(-5*time.Second).Truncate(time.Second))
			in.Kdump = KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictWait},
		// CHECK_HEARTBEAT: a fresh HBV2 heartbeat is a witness where
		// InstanceHA's rule judges (no agent, mode nova, partition guard).
		{"heartbeat fresh + no agent + nova down is heartbeat-alive, not fenced", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, down
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat = true, 120*time.Second, now.Add(-30*time.Second)
		}, VerdictHeartbeatAlive},
		{"heartbeat fresh + mode nova + nova down is heartbeat-alive", func(in *VerdictInput) {
			in.Mode, in.Service = "nova", down
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat = true, 120*time.Second, now.Add(-30*time.Second)
		}, VerdictHeartbeatAlive},
		{"heartbeat fresh + partition guard + stale for DELTA is heartbeat-alive", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Partition, in.Service = MeshDead, deadAt, true, up(now.Add(-31*time.Second))
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat = true, 120*time.Second, now.Add(-time.Second)
		}, VerdictHeartbeatAlive},
		{"heartbeat fresh + no agent + kdump notice: the heartbeat wins, as in InstanceHA's gate order", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshLeft, down
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat = true, 120*time.Second, now.Add(-time.Second)
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
		}, VerdictHeartbeatAlive},
		{"heartbeat older than HEARTBEAT_TIMEOUT is not a witness: InstanceHA's rule", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, down
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat = true, 120*time.Second, now.Add(-121*time.Second)
		}, VerdictInstanceHA},
		{"no heartbeat ever: InstanceHA's rule", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, down
			in.CheckHeartbeat, in.HeartbeatTimeout = true, 120*time.Second
		}, VerdictInstanceHA},
		{"heartbeat during the listener's grace period has no effect", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, down
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat, in.HeartbeatGrace = true, 120*time.Second, now.Add(-time.Second), true
		}, VerdictInstanceHA},
		{"heartbeat cliff: a no-agent host whose heartbeat stopped waits", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, down
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat, in.HeartbeatCliff = true, 120*time.Second, now.Add(-125*time.Second), true
		}, VerdictWait},
		{"heartbeat is not looked at without CHECK_HEARTBEAT", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, down
			in.HeartbeatTimeout, in.Heartbeat = 120*time.Second, now.Add(-time.Second)
		}, VerdictInstanceHA},
		{"a host with an agent is judged by the mesh whatever its heartbeat", func(in *VerdictInput) {
			in.MeshState, in.MeshSince, in.Service = MeshDead, deadAt, up(deadAt.Add(-4*time.Second).Truncate(time.Second))
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat = true, 120*time.Second, now.Add(-time.Second)
		}, VerdictFailed},
		{"heartbeat fresh + nova up is healthy", func(in *VerdictInput) {
			in.MeshState, in.Service = MeshUnknown, up(now.Add(-time.Second))
			in.CheckHeartbeat, in.HeartbeatTimeout, in.Heartbeat = true, 120*time.Second, now.Add(-time.Second)
		}, VerdictHealthy},
		{"kdump on a forced-down host is not a new failure", func(in *VerdictInput) {
			sv := down
			sv.ForcedDown = true
			in.MeshState, in.MeshSince, in.Service = MeshDead, deadAt, sv
			in.CheckKdump, in.Kdump = true, KdumpNotice{Host: "h", At: now.Add(-time.Second)}
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

// TestJudgeMissedReportEdge pins the moment Nova's second witness holds:
// one report interval plus the margin after updated_at, to the nanosecond,
// and the wait says exactly when to look again.
func TestJudgeMissedReportEdge(t *testing.T) {
	updated := time.Date(2026, 11, 21, 12, 0, 10, 0, time.UTC)
	due := updated.Add(12 * time.Second)
	in := VerdictInput{Mode: "both", Delta: 30 * time.Second, ReportInterval: 10 * time.Second, Margin: 2 * time.Second,
		MeshState: MeshDead, MeshSince: updated.Add(4 * time.Second),
		Service: nova.Service{Host: "h", Status: "enabled", State: "up", UpdatedAt: updated}}
	in.Now = due.Add(-time.Millisecond)
	v, why, look := Judge(in)
	if v != VerdictWait || !look.Equal(due) {
		t.Fatalf("1 ms before the report is missed: %s at %v (%s), want wait until %v", v, look, why, due)
	}
	in.Now = due
	if v, why, _ := Judge(in); v != VerdictFailed {
		t.Fatalf("at the due time: %s (%s), want failed", v, why)
	}
	// The heartbeat that was due arrives one second before the deadline:
	// the mesh's verdict is void from then on.
	in.Now = due
	in.Service.UpdatedAt = due.Add(-time.Second)
	v, why, look = Judge(in)
	if v != VerdictWait || !look.Equal(in.Service.UpdatedAt.Add(in.Delta+time.Second)) {
		t.Fatalf("heartbeat after the mesh's verdict: %s at %v (%s), want wait for DELTA", v, look, why)
	}
	if !strings.Contains(why, "cut off from the mesh") {
		t.Errorf("the wait must say why: %s", why)
	}
}

func TestCheckPartition(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	mk := func(states ...string) MeshSnapshot {
		s := MeshSnapshot{}
		for i, st := range states {
			h := "c" + string(rune('a'+i))
			s[h] = MeshMember{Host: h, State: st, Since: now.Add(-10 * time.Second)}
		}
		return s
	}
	cases := []struct {
		name      string
		snap      MeshSnapshot
		percent   int
		suspected bool
		lost      int
		total     int
	}{
		{"one of three dead is a failure, not a partition", mk(MeshDead, MeshAlive, MeshAlive), 30, false, 1, 3},
		{"two of three dead within the window is suspected", mk(MeshDead, MeshDead, MeshAlive), 30, true, 2, 3},
		{"two of ten is below 30 %", mk(MeshDead, MeshDead, MeshAlive, MeshAlive, MeshAlive, MeshAlive, MeshAlive, MeshAlive, MeshAlive, MeshAlive), 30, false, 2, 10},
		{"left members do not count", mk(MeshDead, MeshDead, MeshLeft, MeshLeft, MeshLeft, MeshLeft, MeshLeft, MeshLeft, MeshAlive, MeshAlive, MeshAlive), 30, true, 2, 5},
		{"exactly the percentage is not more than it", mk(MeshDead, MeshDead, MeshAlive, MeshAlive), 50, false, 2, 4},
		{"suspects are not lost", mk(MeshSuspect, MeshSuspect, MeshAlive), 30, false, 0, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := CheckPartition(c.snap, now, time.Minute, c.percent)
			if p.Suspected != c.suspected || p.Lost != c.lost || p.Total != c.total {
				t.Errorf("got %+v, want suspected=%v lost=%d total=%d", p, c.suspected, c.lost, c.total)
			}
		})
	}
	t.Run("deaths older than the window are not at once", func(t *testing.T) {
		snap := mk(MeshDead, MeshDead, MeshAlive)
		m := snap["ca"]
		m.Since = now.Add(-2 * time.Minute)
		snap["ca"] = m
		if p := CheckPartition(snap, now, time.Minute, 30); p.Suspected || p.Lost != 1 {
			t.Errorf("got %+v", p)
		}
	})
}

func TestKdumpLogKeepsTheLatestNotice(t *testing.T) {
	k := NewKdumpLog()
	t0 := time.Now()
	k.Record(KdumpNotice{Host: "c1", From: "a", At: t0})
	k.Record(KdumpNotice{Host: "c1", From: "b", At: t0.Add(-time.Second)}) // late, older
	if n, ok := k.Last("c1"); !ok || n.From != "a" {
		t.Errorf("last = %+v, %v", n, ok)
	}
	if _, ok := k.Last("c2"); ok {
		t.Error("c2 has no notice")
	}
	var nilLog *KdumpLog
	nilLog.Record(KdumpNotice{Host: "c1", At: t0})
	if _, ok := nilLog.Last("c1"); ok {
		t.Error("a nil log knows nothing")
	}
}
