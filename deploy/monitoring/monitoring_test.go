package monitoring

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/internal/testkit"
)

// scale stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 2).
var scale = testkit.Scaler(2)

var update = flag.Bool("update", false, "rewrite iha-dashboard.json from Dashboard()")

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile("iha.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var r ruleFile
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (Debian package prometheus; scripts/install-test-deps.sh): %v", err)
	}
	return p
}

// TestRulesPassPromtool: promtool accepts the rules and their unit tests
// pass; every alert is tested firing and not firing, and its runbook is a
// section of docs/operations.md.
func TestRulesPassPromtool(t *testing.T) {
	pt := promtool(t)
	for _, args := range [][]string{{"check", "rules", "iha.rules.yaml"}, {"test", "rules", "iha.rules.test.yaml"}} {
		out, err := exec.Command(pt, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s: %s", strings.Join(args, " "), bytes.TrimSpace(out))
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	b, _ := os.ReadFile("iha.rules.test.yaml")
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	ops, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(ops), "\n") {
		if strings.HasPrefix(line, "#") {
			h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
			anchors[strings.Map(func(r rune) rune {
				switch {
				case r == ' ' || r == '-':
					return '-'
				case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
					return r
				}
				return -1
			}, h)] = true
		}
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !firing[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: tested firing %v, not firing %v; want both", r.Alert, firing[r.Alert], quiet[r.Alert])
			}
			rb := r.Annotations["runbook"]
			anchor, ok := strings.CutPrefix(rb, "docs/operations.md#")
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook %q is not a section of docs/operations.md", r.Alert, rb)
			}
		}
	}
	if n < 10 {
		t.Errorf("%d alerts", n)
	}
}

// TestDashboardIsGenerated: the committed JSON is Dashboard()'s output
// (go test ./deploy/monitoring -run TestDashboardIsGenerated -update).
func TestDashboardIsGenerated(t *testing.T) {
	got := Dashboard()
	if *update {
		if err := os.WriteFile("iha-dashboard.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("iha-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("iha-dashboard.json is not what Dashboard() generates: run go test ./deploy/monitoring -run TestDashboardIsGenerated -update")
	}
	if len(Queries()) < 20 {
		t.Errorf("%d queries", len(Queries()))
	}
}

var (
	strLit   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers = regexp.MustCompile(`\{[^}]*\}`)
	ranges   = regexp.MustCompile(`\[[^\]]*\]`)
	grouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	ident    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

var keywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true}

// metricNames returns the metric (and recording rule) names a PromQL
// expression reads: identifiers outside strings, label matchers, ranges
// and grouping clauses, that are not functions or keywords.
func metricNames(expr string) []string {
	e := strLit.ReplaceAllString(expr, `""`)
	e = matchers.ReplaceAllString(e, " ")
	e = ranges.ReplaceAllString(e, " ")
	e = grouping.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range ident.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " ")
		if strings.HasPrefix(rest, "(") || keywords[strings.ToLower(name)] {
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNamesParser(t *testing.T) {
	got := metricNames(`sum by (result) (rate(instanceha_poll_cycles_total{result="ok"}[5m])) * 60 or vector(0) and on(host) iha:x:y > bool 3`)
	if fmt.Sprint(got) != "[instanceha_poll_cycles_total iha:x:y]" {
		t.Fatalf("metricNames = %v", got)
	}
}

var build struct {
	once sync.Once
	dir  string
	err  error
}

func binary(t *testing.T, name string) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "iha-monitoring-test-")
		for _, c := range []string{"iha-leader", "iha-agent"} {
			if build.err != nil {
				return
			}
			// iha-leader with the demo's build tag: the scrape test runs
			// its demo (the metrics are the production code's either way).
			if out, err := exec.Command("go", "build", "-tags", "dev", "-o", filepath.Join(build.dir, c), "../../cmd/"+c).CombinedOutput(); err != nil {
				build.err = fmt.Errorf("go build %s: %v\n%s", c, err, out)
			}
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return filepath.Join(build.dir, name)
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// start runs a child process, stopped by PID when the test ends.
func start(t *testing.T, bin string, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(scale(15 * time.Second)):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), out.String())
		}
	})
	return out
}

// scrapeNames returns the sample names of one /metrics scrape (histograms
// and summaries with their _bucket, _sum and _count series).
func scrapeNames(url string) (map[string]bool, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		names[name] = true
	}
	return names, sc.Err()
}

// TestEveryMetricOfTheRulesAndDashboardExists scrapes a real iha-leader
// through a whole demo recovery (iha-leader -dev: three Raft nodes, a
// simulated cloud, one compute failing; the union of scrapes every 200 ms,
// since some series exist only while a recovery is in flight) and a real
// iha-agent, and checks that every metric the rules and the dashboard read
// is in them, and every recording rule they read is defined.
func TestEveryMetricOfTheRulesAndDashboardExists(t *testing.T) {
	rules := readRules(t)
	recorded := map[string]bool{}
	want := map[string][]string{} // name -> where
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			where := "rule " + r.Record + r.Alert
			for _, n := range metricNames(r.Expr) {
				want[n] = append(want[n], where)
			}
		}
	}
	for _, e := range Queries() {
		for _, n := range metricNames(e) {
			want[n] = append(want[n], "dashboard: "+e)
		}
	}

	// The agent: alone, for its metric names (insecure: no mesh to
	// encrypt, no controller to prove its host to).
	metricsAddr := testaddr.Loopback(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("nova_host: compute-scraped\nbind: 127.0.0.1:0\nkdump_listen: \"127.0.0.1:0\"\nstate_dir: %s\nmetrics_listen: %s\ninsecure: true\n",
		filepath.Join(dir, "state"), metricsAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, binary(t, "iha-agent"), "-config", cfg)
	seen := map[string]bool{}
	deadline := time.Now().Add(scale(30 * time.Second))
	for {
		names, err := scrapeNames("http://" + metricsAddr + "/metrics")
		if err == nil {
			for n := range names {
				seen[n] = true
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("iha-agent /metrics: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The leader, through the demo's recovery.
	out := start(t, binary(t, "iha-leader"), "-dev", "-dev-keep")
	urlRE := regexp.MustCompile(`status API: (http://\S+)`)
	deadline = time.Now().Add(scale(3 * time.Minute))
	url, scrapes := "", 0
	for {
		if url == "" {
			if m := urlRE.FindStringSubmatch(out.String()); m != nil {
				url = m[1] + "/metrics"
			}
		}
		if url != "" {
			if names, err := scrapeNames(url); err == nil {
				scrapes++
				for n := range names {
					seen[n] = true
				}
			}
		}
		if url != "" && strings.Contains(out.String(), "recovery done") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not finish its recovery (%d scrapes)", scrapes)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if names, err := scrapeNames(url); err == nil {
		for n := range names {
			seen[n] = true
		}
	}
	t.Logf("%d scrapes of iha-leader, %d metric names seen", scrapes, len(seen))

	var missing []string
	for n, where := range want {
		if strings.Contains(n, ":") {
			if !recorded[n] {
				missing = append(missing, n+" (recording rule not defined; read by "+where[0]+")")
			}
			continue
		}
		if !seen[n] {
			missing = append(missing, n+" (read by "+where[0]+")")
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("not exposed: %s", m)
	}
	t.Logf("%d metric names read by the rules and the dashboard, all exposed", len(want))
}

// TestPrometheusRuleIsGenerated: deploy/kubernetes/monitoring's
// PrometheusRule carries exactly iha.rules.yaml's groups.
func TestPrometheusRuleIsGenerated(t *testing.T) {
	rules, err := os.ReadFile("iha.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := PrometheusRule(rules, "iha")
	if err != nil {
		t.Fatal(err)
	}
	path := "../kubernetes/monitoring/prometheusrule.yaml"
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not generated from iha.rules.yaml: run go test ./deploy/monitoring -run TestPrometheusRuleIsGenerated -update", path)
	}
	// The groups inside are the rules file's, rule for rule.
	var pr struct {
		Spec ruleFile `yaml:"spec"`
	}
	if err := yaml.Unmarshal(got, &pr); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pr.Spec) != fmt.Sprint(readRules(t)) {
		t.Fatal("the PrometheusRule's groups differ from iha.rules.yaml's")
	}
}
