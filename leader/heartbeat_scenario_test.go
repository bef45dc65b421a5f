package leader_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/novasim"
)

// senders plays edpm's heartbeat timers: every interval each host still
// sending records a heartbeat, as the listener does on a valid packet.
type senders struct {
	log  *leader.HeartbeatLog
	mu   sync.Mutex
	on   map[string]bool
	stop chan struct{}
	done chan struct{}
}

func startSenders(t *testing.T, log *leader.HeartbeatLog, every time.Duration, hosts ...string) *senders {
	s := &senders{log: log, on: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, h := range hosts {
		s.on[h] = true
	}
	go func() {
		defer close(s.done)
		for {
			s.mu.Lock()
			for h, on := range s.on {
				if on {
					now := time.Now()
					if err := log.Record(h+".example.com", now, now); err != nil && !errors.Is(err, leader.ErrHeartbeatReplay) {
						panic(err)
					}
				}
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	t.Cleanup(func() { close(s.stop); <-s.done })
	return s
}

func (s *senders) silence(hosts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hosts {
		s.on[h] = false
	}
}

func heartbeatSettings() (s sandboxSettings) {
	st := meshSettings()
	st.Delta = 2 * time.Second
	st.Poll = time.Second
	st.CheckHeartbeat = true
	st.HeartbeatTimeout = 3 * time.Second
	st.Threshold = 100
	st.MeshPartitionPercent = 100
	return sandboxSettings{st}
}

// TestScenarioHeartbeatIsAWitnessForHostsWithoutAnAgent is issue 16 item 4:
// InstanceHA's heartbeat (CHECK_HEARTBEAT) is a liveness witness for a
// compute that has no iha-agent yet. c3 and c4 have none. c3's nova-compute
// stops but its heartbeat goes on: it is reachable (HostReachable, as
// InstanceHA says), not fenced, until its heartbeat stops too. c4 sends none
// and is recovered by InstanceHA's rule. c1 has an agent: the mesh judges
// it, its heartbeat notwithstanding.
func TestScenarioHeartbeatIsAWitnessForHostsWithoutAnAgent(t *testing.T) {
	t.Parallel()
	s := heartbeatSettings().Settings
	mesh := sandbox.NewMesh()
	beats := leader.NewHeartbeatLog()
	beats.Started(time.Now().Add(-time.Hour)) // past the grace period
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Mesh, o.Heartbeats = mesh, beats
		o.Sim.ServiceDownTime = 30 * time.Second
	})
	w.Sim.AddServer(novasim.ServerSpec{Name: "vm-c3", Host: "c3", ImageID: w.image})
	w.Sim.AddServer(novasim.ServerSpec{Name: "vm-c4", Host: "c4", ImageID: w.image})
	snd := startSenders(t, beats, 500*time.Millisecond, "c1", "c2", "c3")
	w.start()
	mesh.Forget("c3")
	mesh.Forget("c4")
	time.Sleep(500 * time.Millisecond)

	w.Hang("c3")
	w.Hang("c4")
	waitFor(t, 20*time.Second, "c4 recovered by InstanceHA's rule", func() bool {
		r := w.FSM().Host("c4")
		return r != nil && r.Fence != nil
	})
	if v := w.FSM().Host("c4").Evidence.Verdict; v != string(leader.VerdictInstanceHA) {
		t.Errorf("c4's verdict %s", v)
	}
	waitFor(t, 10*time.Second, "a HostReachable event for c3", func() bool { return len(w.events("c3", leader.EventHostReachable)) > 0 })
	settle()
	if p := w.phase("c3"); p != "" {
		t.Fatalf("c3's heartbeat is fresh but it has a recovery record, phase %s", p)
	}
	if _, reqs, _ := w.BMC("c3").Counts(); reqs != 0 {
		t.Fatalf("c3 got %d power-off requests while its heartbeat was fresh", reqs)
	}
	if n := len(w.events("c3", leader.EventHostReachable)); n != 1 {
		t.Errorf("%d HostReachable events for one episode, want 1", n)
	}

	snd.silence("c3")
	waitFor(t, 20*time.Second, "c3 fenced once its heartbeat stopped", func() bool {
		r := w.FSM().Host("c3")
		return r != nil && r.Fence != nil
	})
	last, _ := beats.Last("c3")
	if d := w.stepStarted("c3", leader.StepFence).Sub(last); d < s.HeartbeatTimeout {
		t.Errorf("c3 fenced %s after its last heartbeat, before HEARTBEAT_TIMEOUT %s", d, s.HeartbeatTimeout)
	}

	// c1 has an agent: dead in the mesh, Nova silent since, heartbeat fresh.
	w.Hang("c1")
	time.Sleep(1100 * time.Millisecond)
	mesh.Set("c1", leader.MeshDead, "c2")
	waitFor(t, 20*time.Second, "c1 judged by the mesh", func() bool { return w.phase("c1") != "" })
	if v := w.FSM().Host("c1").Evidence.Verdict; v != string(leader.VerdictFailed) {
		t.Errorf("c1's verdict %s, want the mesh's", v)
	}
}

// TestScenarioHeartbeatCliffHoldsThenExpires is R13.6–R13.9 without W2:
// the heartbeats of four of six computes without an agent stop at once
// together with their nova-compute (a switch failure looks like this). The
// cliff holds their verdicts (HeartbeatCliff), then, after
// HEARTBEAT_CLIFF_MAX_CYCLES polls, takes them as genuine failures
// (HeartbeatCliffExpired) and they are recovered.
func TestScenarioHeartbeatCliffHoldsThenExpires(t *testing.T) {
	t.Parallel()
	s := heartbeatSettings().Settings
	s.DetectionMode = "nova"
	s.Poll = time.Second
	s.HeartbeatCliffThreshold = 50
	s.HeartbeatCliffMaxCycles = 3
	beats := leader.NewHeartbeatLog()
	beats.Started(time.Now().Add(-time.Hour))
	w := newWorld(t, s, func(o *sandbox.Options) { o.Heartbeats = beats })
	for i := 5; i <= 6; i++ {
		h := fmt.Sprintf("c%d", i)
		w.AddCompute(h, "nova")
	}
	for _, h := range []string{"c2", "c3", "c4"} {
		w.Sim.AddServer(novasim.ServerSpec{Name: "vm-" + h, Host: h, ImageID: w.image})
	}
	snd := startSenders(t, beats, 300*time.Millisecond, "c1", "c2", "c3", "c4", "c5", "c6")
	w.start()
	time.Sleep(500 * time.Millisecond)

	lost := time.Now()
	for _, h := range []string{"c1", "c2", "c3", "c4"} {
		w.Hang(h)
	}
	snd.silence("c1", "c2", "c3", "c4")
	waitFor(t, 20*time.Second, "a HeartbeatCliff event", func() bool { return len(w.events("", leader.EventHeartbeatCliff)) == 1 })
	cliffAt := time.Now()
	waitFor(t, 30*time.Second, "the cliff expired", func() bool { return len(w.events("", leader.EventHeartbeatCliffExpired)) == 1 })
	waitFor(t, 30*time.Second, "the four hosts recovered", func() bool {
		for _, h := range []string{"c1", "c2", "c3", "c4"} {
			if r := w.FSM().Host(h); r == nil || r.Fence == nil {
				return false
			}
		}
		return true
	})
	window := time.Duration(s.HeartbeatCliffMaxCycles) * s.Poll
	for _, h := range []string{"c1", "c2", "c3", "c4"} {
		if at := w.stepStarted(h, leader.StepFence); at.Before(cliffAt.Add(window - 500*time.Millisecond)) {
			t.Errorf("%s fenced %s after the heartbeats stopped, during the cliff (held for %s)", h, at.Sub(lost), window)
		}
	}
	if msg := w.events("", leader.EventHeartbeatCliff)[0].Message; !strings.Contains(msg, "4 of 6") {
		t.Errorf("cliff event %q, want 4 of 6 computes", msg)
	}
	for _, h := range []string{"c5", "c6"} {
		if w.phase(h) != "" {
			t.Errorf("%s is healthy but has a record", h)
		}
	}
}

type sandboxSettings struct{ Settings config.Settings }
