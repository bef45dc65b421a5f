//go:build lab && labsoak

package scenarios

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// soakStep is one disruption of a healthy compute, at an offset from the
// start of a mode's soak.
type soakStep struct {
	at   time.Duration
	what string
	do   func(l *lab) error
}

// TestLabSoak is `make lab-soak` (issue 14 item 8): a bounded false-fence
// soak at Nova's defaults (report_interval 10 s, service_down_time 60 s)
// with three leaders and an agent per compute, and no real failure. Per
// mode (LAB_SOAK_MODES, default both,nova: IHA's defaults, and nova at
// DELTA 10 POLL 15 with the mesh wired; both-lan and gossip are also known), for
// about five minutes: graceful restarts of nova-compute on healthy
// computes, an agent SIGSTOPped for 3 s, a nova-compute SIGSTOPped for
// 30 s while its agent lives, two CPU hogs for 60 s. It counts, from the
// BMCs' histories and Nova, the fences (BMC power commands), force-downs
// (forced_down seen true, polled every second) and evacuations (Nova's
// evacuation migrations) of these healthy hosts, and fails if any is not 0.
func TestLabSoak(t *testing.T) {
	l := newLab(t, 4)
	l.ensureEvacFlavor()
	var modes []benchMode
	for _, name := range strings.Split(envOr("LAB_SOAK_MODES", "both,nova"), ",") {
		found := false
		for _, m := range benchModes {
			if m.name == name {
				modes = append(modes, m)
				found = true
			}
		}
		if !found {
			t.Fatalf("LAB_SOAK_MODES: unknown mode %q (both, both-lan, gossip, nova)", name)
		}
	}
	hosts := l.computes()
	var ids []string
	for _, h := range hosts {
		ids = append(ids, l.createServer("soak-"+h, evacFlavor, h))
	}
	l.waitStatus(t, ids, "ACTIVE")
	defer l.deleteServers(ids)

	ctl := func(args ...string) func(l *lab) error {
		return func(l *lab) error {
			if out, err := l.sh(2*time.Minute, "ctl.sh", args...); err != nil {
				return fmt.Errorf("ctl.sh %v: %v %s", args, err, out)
			}
			return nil
		}
	}
	pause := func(d time.Duration, host, proc string) func(l *lab) error {
		return func(l *lab) error {
			if err := ctl("freeze", host, proc)(l); err != nil {
				return err
			}
			time.Sleep(d)
			return ctl("thaw", host, proc)(l)
		}
	}
	hogs := func(d time.Duration) func(l *lab) error {
		return func(l *lab) error {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			burn(ctx, 2)
			return nil
		}
	}
	steps := []soakStep{
		{0, "two CPU hogs for 60 s", hogs(60 * time.Second)},
		{5 * time.Second, "graceful restart of nova-compute on " + hosts[0], ctl("restart", hosts[0], "nova-compute")},
		{30 * time.Second, "agent of " + hosts[1] + " SIGSTOPped for 3 s", pause(3*time.Second, hosts[1], "iha-agent")},
		{50 * time.Second, "nova-compute of " + hosts[2] + " SIGSTOPped for 30 s (its agent lives)", pause(30*time.Second, hosts[2], "nova-compute")},
		{100 * time.Second, "graceful restart of nova-compute on " + hosts[3], ctl("restart", hosts[3], "nova-compute")},
		{130 * time.Second, "agent of " + hosts[0] + " SIGSTOPped for 3 s", pause(3*time.Second, hosts[0], "iha-agent")},
		{150 * time.Second, "graceful restart of nova-compute on " + hosts[1], ctl("restart", hosts[1], "nova-compute")},
		{170 * time.Second, "nova-compute of " + hosts[3] + " SIGSTOPped for 30 s (its agent lives)", pause(30*time.Second, hosts[3], "nova-compute")},
		{220 * time.Second, "graceful restart of nova-compute on " + hosts[2], ctl("restart", hosts[2], "nova-compute")},
	}
	// After the last step, a quiet minute: a verdict that follows a late
	// disruption (DELTA, POLL, Nova's 60 s) lands inside the soak.
	const quietEnd = 300 * time.Second

	type result struct {
		mode                        string
		fences, forced, evacuations int
		downs                       map[string]int
		details                     []string
		took                        time.Duration
		verdicts                    string
	}
	var results []result
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			defer l.use(t)()
			l.settle(t)
			l.setAgentProfile(t, m.agentProfile)
			c := l.writeConfigAs(t, "soak-"+m.name, l.bin, m.keys)
			c.start(t)
			defer c.stop(t)
			mode := m.keys["DETECTION_MODE"]
			if mode == "" {
				mode = "both"
			}
			l.waitMesh(t, c, "both") // the mesh is wired in every mode
			t.Logf("soak %s: %s", m.name, m.about)

			t0 := time.Now()
			res := result{mode: m.name, downs: map[string]int{}}
			// The watcher: Nova every second, for forced_down and state.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			forcedNow := map[string]bool{} // each false → true is one force-down
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for {
					for h, s := range l.servicesErr() {
						mu.Lock()
						if s.ForcedDown && !forcedNow[h] {
							res.forced++
							res.details = append(res.details, fmt.Sprintf("+%4.0fs %s forced down (%s)", time.Since(t0).Seconds(), h, s.DisabledReason))
						}
						forcedNow[h] = s.ForcedDown
						if s.State != "up" {
							res.downs[h]++
						}
						mu.Unlock()
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			// The disruptions, each at its offset (hogs run beside the rest).
			var sw sync.WaitGroup
			for _, s := range steps {
				time.Sleep(time.Until(t0.Add(s.at)))
				sw.Add(1)
				go func(s soakStep) {
					defer sw.Done()
					err := s.do(l)
					mu.Lock()
					defer mu.Unlock()
					line := fmt.Sprintf("+%4.0fs %s", s.at.Seconds(), s.what)
					if err != nil {
						line += ": " + err.Error()
						t.Errorf("soak step %q: %v", s.what, err)
					}
					res.details = append(res.details, line)
				}(s)
			}
			sw.Wait()
			time.Sleep(time.Until(t0.Add(quietEnd)))
			close(stop)
			wg.Wait()
			res.took = time.Since(t0)

			for _, h := range hosts {
				for _, e := range l.bmcHistory(h, t0) {
					res.fences++
					res.details = append(res.details, fmt.Sprintf("+%4.0fs BMC of %s: %s (%s)", e.at.Sub(t0).Seconds(), h, e.op, e.was))
				}
				for _, mg := range l.evacuations(h, t0) {
					res.evacuations++
					res.details = append(res.details, fmt.Sprintf("evacuation of %s from %s to %s (%s)", mg.Instance, h, mg.Dest, mg.Status))
				}
			}
			hostsOut, _ := c.iha("hosts", "-o", "wide")
			events, _ := c.iha("events", "--limit", "200", "-o", "wide")
			res.verdicts = hostsOut + "\n" + events
			results = append(results, res)
			sort.Strings(res.details)
			t.Logf("soak %s (%v): fences %d, force-downs %d, evacuations %d; Nova 'down' answers per host %v\n%s\niha hosts / events:\n%s",
				m.name, res.took.Round(time.Second), res.fences, res.forced, res.evacuations, res.downs,
				strings.Join(res.details, "\n"), res.verdicts)
			if res.fences+res.forced+res.evacuations > 0 {
				t.Errorf("soak %s: healthy hosts fenced %d, forced down %d, evacuated %d times (want 0)\nleaders' verdicts:\n%s",
					m.name, res.fences, res.forced, res.evacuations, grepLines(c.logText(), "verdict"))
			}
		})
	}
	for _, r := range results {
		t.Logf("lab-soak %-9s %v: fences %d, force-downs %d, evacuations %d", r.mode, r.took.Round(time.Second), r.fences, r.forced, r.evacuations)
	}
}

// burn keeps n goroutines busy until ctx ends: CPU starvation of the lab's
// daemons on this 2-core machine.
func burn(ctx context.Context, n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 1.0
			for ctx.Err() == nil {
				for j := 0; j < 1_000_000; j++ {
					x = math.Sqrt(x + float64(j))
				}
			}
			_ = x
		}()
	}
	wg.Wait()
}
