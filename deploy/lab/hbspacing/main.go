// Command hbspacing measures how Nova's compute heartbeats look through the
// API: it polls GET /os-services?binary=nova-compute every -every (0.2 s)
// for -for (5 min) and reports, per host and over all hosts, the
// distribution (n, min, p50, p90, p99, max) of
//
//   - spacing: the difference between two successive updated_at values of
//     one host (the heartbeat period as Nova stored it);
//   - visible: the moment a new updated_at value was first returned by the
//     API minus that value (truncation of the stored time + the RPC and DB
//     path + the poll granularity);
//   - age: the apparent age of the value the API showed just before it
//     changed (first sight of the next value minus the previous value): the
//     oldest a healthy host's heartbeat ever looks, which a staleness rule
//     must stay above;
//
// and whether updated_at carries a fraction of a second (it does not when
// the database truncates or rounds to whole seconds; a negative `visible`
// would mean rounding up).
//
// It reads the lab's address from $LAB_DIR/env (or -nova), changes
// nothing in Nova, and with -hogs N runs N busy goroutines for the whole
// measurement (CPU starvation of the lab's Python daemons). Usage:
//
//	go run ./deploy/lab/hbspacing -env $LAB_DIR/env -for 5m [-hogs 2] [-raw out.jsonl]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	nova  string
	token string
	every time.Duration
	dur   time.Duration
	hogs  int
	raw   string
	label string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hbspacing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	env := fs.String("env", os.ExpandEnv("${LAB_DIR}/env"), "the lab's env file (NOVA_CONTRACT_URL, NOVA_CONTRACT_TOKEN)")
	fs.StringVar(&o.nova, "nova", "", "Nova's API root (…/v2.1); overrides -env")
	fs.StringVar(&o.token, "token", "admin:admin", "X-Auth-Token")
	fs.DurationVar(&o.every, "every", 200*time.Millisecond, "poll interval")
	fs.DurationVar(&o.dur, "for", 5*time.Minute, "how long to measure")
	fs.IntVar(&o.hogs, "hogs", 0, "busy goroutines burning CPU during the measurement")
	fs.StringVar(&o.raw, "raw", "", "write every observed change as a JSON line to this file")
	fs.StringVar(&o.label, "label", "", "a label printed with the figures (e.g. idle, 2 hogs)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.nova == "" {
		vars, err := readEnv(*env)
		if err != nil {
			fmt.Fprintf(stderr, "hbspacing: %v (give -nova or -env)\n", err)
			return 2
		}
		o.nova = vars["NOVA_CONTRACT_URL"]
		if t := vars["NOVA_CONTRACT_TOKEN"]; t != "" {
			o.token = t
		}
		if o.nova == "" {
			fmt.Fprintf(stderr, "hbspacing: %s has no NOVA_CONTRACT_URL\n", *env)
			return 2
		}
	}
	if o.every <= 0 || o.dur <= 0 || o.hogs < 0 {
		fmt.Fprintln(stderr, "hbspacing: -every and -for must be positive, -hogs not negative")
		return 2
	}
	m, err := measure(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "hbspacing: %v\n", err)
		return 1
	}
	m.report(stdout, o)
	return 0
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "="); ok {
			vars[k] = v
		}
	}
	return vars, sc.Err()
}

// change is one new updated_at value of one host, as first seen.
type change struct {
	Host      string    `json:"host"`
	UpdatedAt time.Time `json:"updated_at"`
	Seen      time.Time `json:"seen"`        // when the answer carrying it arrived
	Asked     time.Time `json:"asked"`       // when that request was sent
	PrevSeen  time.Time `json:"prev_seen"`   // the poll before it (the old value still shown)
	Spacing   float64   `json:"spacing_s"`   // UpdatedAt - previous UpdatedAt
	Visible   float64   `json:"visible_s"`   // Seen - UpdatedAt
	Age       float64   `json:"age_s"`       // Seen - previous UpdatedAt
	Fraction  bool      `json:"fraction"`    // UpdatedAt has sub-second digits
	State     string    `json:"state"`       // Nova's state in that answer
	RawValue  string    `json:"raw"`         // updated_at as Nova wrote it
	PollCost  float64   `json:"poll_cost_s"` // Seen - Asked
}

type measurement struct {
	changes  []change
	polls    int
	errs     int
	pollCost []float64
	downs    map[string]int // answers in which a host was "down"
	start    time.Time
	end      time.Time
	load     [2]string // load average at start and end
}

type service struct {
	Host      string  `json:"host"`
	State     string  `json:"state"`
	UpdatedAt *string `json:"updated_at"`
}

func measure(ctx context.Context, o options) (*measurement, error) {
	ctx, cancel := context.WithTimeout(ctx, o.dur)
	defer cancel()
	var burning atomic.Bool
	burning.Store(true)
	for i := 0; i < o.hogs; i++ {
		go func() {
			x := 1.0
			for burning.Load() {
				for j := 0; j < 1e6; j++ {
					x = math.Sqrt(x + float64(j))
				}
			}
			_ = x
		}()
	}
	defer burning.Store(false)

	var raw *json.Encoder
	if o.raw != "" {
		f, err := os.Create(o.raw)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		raw = json.NewEncoder(f)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	m := &measurement{downs: map[string]int{}, start: time.Now(), load: [2]string{loadavg(), ""}}
	type last struct {
		raw  string
		at   time.Time
		seen time.Time // last poll that still showed raw
	}
	prev := map[string]*last{}
	tick := time.NewTicker(o.every)
	defer tick.Stop()
	for {
		asked := time.Now()
		svcs, err := poll(ctx, hc, o)
		seen := time.Now()
		switch {
		case ctx.Err() != nil:
			m.end = time.Now()
			m.load[1] = loadavg()
			return m, nil
		case err != nil:
			m.errs++
		default:
			m.polls++
			m.pollCost = append(m.pollCost, seen.Sub(asked).Seconds())
			for _, s := range svcs {
				if s.State != "up" {
					m.downs[s.Host]++
				}
				if s.UpdatedAt == nil {
					continue // never reported yet
				}
				at, err := parseNovaTime(*s.UpdatedAt)
				if err != nil {
					return nil, fmt.Errorf("host %s: updated_at %q: %w", s.Host, *s.UpdatedAt, err)
				}
				p := prev[s.Host]
				if p == nil {
					prev[s.Host] = &last{raw: *s.UpdatedAt, at: at, seen: seen}
					continue
				}
				if *s.UpdatedAt == p.raw {
					p.seen = seen
					continue
				}
				c := change{Host: s.Host, UpdatedAt: at, Seen: seen, Asked: asked, PrevSeen: p.seen,
					Spacing: at.Sub(p.at).Seconds(), Visible: seen.Sub(at).Seconds(), Age: seen.Sub(p.at).Seconds(),
					Fraction: at.Nanosecond() != 0, State: s.State, RawValue: *s.UpdatedAt, PollCost: seen.Sub(asked).Seconds()}
				m.changes = append(m.changes, c)
				if raw != nil {
					_ = raw.Encode(c)
				}
				*p = last{raw: *s.UpdatedAt, at: at, seen: seen}
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func poll(ctx context.Context, hc *http.Client, o options) ([]service, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(o.nova, "/")+"/os-services?binary=nova-compute", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", o.token)
	req.Header.Set("OpenStack-API-Version", "compute 2.53")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("os-services: HTTP %d", resp.StatusCode)
	}
	var body struct{ Services []service }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Services, nil
}

// parseNovaTime reads Nova's zoneless UTC times ("2026-11-22T11:28:00.000000").
func parseNovaTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05.999999", time.RFC3339Nano} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a Nova time")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// dist is n, min, p50, p90, p99, max of xs (seconds).
type dist struct {
	n                            int
	min, p50, p90, p99, max, avg float64
}

func distOf(xs []float64) dist {
	if len(xs) == 0 {
		return dist{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	q := func(p float64) float64 { return s[int(math.Ceil(p*float64(len(s))))-1] }
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return dist{n: len(s), min: s[0], p50: q(0.5), p90: q(0.9), p99: q(0.99), max: s[len(s)-1], avg: sum / float64(len(s))}
}

func (d dist) String() string {
	if d.n == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%d\tmin %.3f\tp50 %.3f\tp90 %.3f\tp99 %.3f\tmax %.3f", d.n, d.min, d.p50, d.p90, d.p99, d.max)
}

// histogram counts the values of xs rounded to a millisecond: spacings of
// whole-second times take a few values only.
func histogram(xs []float64) string {
	count := map[float64]int{}
	for _, x := range xs {
		count[math.Round(x*1000)/1000]++
	}
	keys := make([]float64, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Float64s(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%gs:%d", k, count[k]))
	}
	return strings.Join(parts, " ")
}

func (m *measurement) report(w io.Writer, o options) {
	fmt.Fprintf(w, "hbspacing %s: %s, polled every %v for %v (%d polls, %d errors), %d hogs, load %s -> %s\n",
		o.label, o.nova, o.every, m.end.Sub(m.start).Round(time.Second), m.polls, m.errs, o.hogs, m.load[0], m.load[1])
	hosts := map[string][]change{}
	var names []string
	for _, c := range m.changes {
		if _, ok := hosts[c.Host]; !ok {
			names = append(names, c.Host)
		}
		hosts[c.Host] = append(hosts[c.Host], c)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, cs []change) {
		var sp, vis, age []float64
		frac, neg := 0, 0
		for _, c := range cs {
			sp = append(sp, c.Spacing)
			vis = append(vis, c.Visible)
			age = append(age, c.Age)
			if c.Fraction {
				frac++
			}
			if c.Visible < 0 {
				neg++
			}
		}
		fmt.Fprintf(tw, "%s\tspacing\t%v\n", name, distOf(sp))
		fmt.Fprintf(tw, "%s\tvisible\t%v\t(negative: %d)\n", name, distOf(vis), neg)
		fmt.Fprintf(tw, "%s\tage\t%v\n", name, distOf(age))
		fmt.Fprintf(tw, "%s\tfraction\t%d of %d values carry sub-second digits; down in %d answers\n", name, frac, len(cs), m.downs[name])
		fmt.Fprintf(tw, "%s\tspacings\t%s\n", name, histogram(sp))
	}
	for _, h := range names {
		row(h, hosts[h])
	}
	row("ALL", m.changes)
	fmt.Fprintf(tw, "poll\tcost\t%v\n", distOf(m.pollCost))
	tw.Flush()
}
