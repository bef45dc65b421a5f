package leader

// The decision log: what the leader decided on and what it decided, as
// JSON lines, append-only, rotated and compressed, for `iha replay`.
//
// Each file is self-contained: it starts with a header, the configuration
// in force and, in its first cycle, every compute service; later cycles
// carry only the rows that changed and, compactly, every service's
// updated_at (milliseconds before the cycle's time). Mesh members are
// written when they change, fence_kdump notices when new, the answers of
// the Nova reads the rules use when they differ from the last ones
// written, and the decisions as they are committed. No secret is ever
// written: the configuration record leaves the tokens out, and of servers,
// images, flavors and aggregates only the fields the rules read are kept.

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// logVersion is the format version this build writes and reads.
const logVersion = 1

// Record kinds of the decision log.
const (
	recHeader   = "hdr"   // file header: format version, node, build
	recConfig   = "cfg"   // the configuration in force
	recTerm     = "term"  // a leadership term began (a fresh reconciler)
	recCycle    = "cyc"   // a poll cycle: changed rows and every updated_at
	recMesh     = "mesh"  // mesh members that changed
	recKdump    = "kdump" // a fence_kdump notice
	recNova     = "nova"  // the answer of a Nova read
	recDecision = "dec"   // a decision
	recVerdicts = "vd"    // verdicts that changed
	recHB       = "hb"    // InstanceHA heartbeats (CHECK_HEARTBEAT) that changed
)

// logRecord is one line of the log. Fields are used by kind.
type logRecord struct {
	Kind string    `json:"k"`
	T    time.Time `json:"t,omitzero"`

	// hdr
	Version int    `json:"v,omitempty"`
	Node    string `json:"node,omitempty"`
	Build   string `json:"build,omitempty"`
	// cfg
	Config *config.SettingsRecord `json:"cfg,omitempty"`
	// cyc: Hosts (when the set changed) is the order of U; Rows are the
	// rows that changed (updated_at aside); U is each host's updated_at in
	// ms before T (null: none).
	Hosts []string       `json:"hosts,omitempty"`
	Rows  []nova.Service `json:"rows,omitempty"`
	U     []*int64       `json:"u,omitempty"`
	// mesh
	Mesh []logMember `json:"m,omitempty"`
	// kdump
	Kdump *KdumpNotice `json:"kd,omitempty"`
	// nova: Call and Key name the read, Err its failure, Value its answer
	Call  string          `json:"call,omitempty"`
	Key   string          `json:"key,omitempty"`
	Err   string          `json:"err,omitempty"`
	Value json.RawMessage `json:"val,omitempty"`
	// dec
	Decision *Decision `json:"d,omitempty"`
	// vd
	Verdicts map[string]Verdict `json:"vd,omitempty"`
	// hb: when the heartbeat listener started (HBStarted, when it changed)
	// and each host's last heartbeat that changed (this controller's
	// clock)
	HBStarted time.Time            `json:"hbs,omitzero"`
	HB        map[string]time.Time `json:"hb,omitempty"`
}

// logMember is a mesh member as the log keeps it (no address).
type logMember struct {
	Host          string    `json:"h"`
	State         string    `json:"s"`
	Since         time.Time `json:"since,omitzero"`
	Accusers      []string  `json:"acc,omitempty"`
	Confirmations int       `json:"conf,omitempty"`
	Gone          bool      `json:"gone,omitempty"`
}

// Decision is one decision of the leader as the decision log and replay
// compare them: acting and shadow decisions in one form.
type Decision struct {
	At time.Time `json:"at"`
	// Cycle is the poll cycle the decision was taken in (its time): live,
	// a decision lands milliseconds after its cycle began; a replay's clock
	// stands still during a cycle. Filled in when a log is read.
	Cycle time.Time `json:"cycle,omitzero"`
	Host  string    `json:"host"`
	// Kind: fence (a recovery begins: power off, force down, evacuate),
	// skip, resume (a recovery marked in Nova is taken over), reenable,
	// plan (the servers and targets of a recovery).
	Kind    string `json:"kind"`
	Shadow  bool   `json:"shadow,omitempty"`
	Verdict string `json:"verdict,omitempty"`
	Detail  string `json:"detail,omitempty"`
	// plan: the servers that would be evacuated (ids, sorted), the
	// reserved host, the failover segment's targets.
	Servers  []string `json:"servers,omitempty"`
	Reserved string   `json:"reserved,omitempty"`
	Targets  []string `json:"targets,omitempty"`
}

// Decision kinds that are not shadow kinds.
const decisionPlan = "plan"

// DecisionLogOptions configure a decision log.
type DecisionLogOptions struct {
	Dir      string // created if missing
	MaxBytes int64  // rotate beyond this size (default 16 MiB)
	Files    int    // files kept, the current one included (default 8)
	Node     string
	Build    string
	Logger   *slog.Logger
}

// logFile is the name of the file being written; rotated files are
// decisions-<UTC time>.log.gz.
const logFile = "decisions.log"

// decisionLog is the writer: append-only, flushed per record, rotated.
type decisionLog struct {
	opts DecisionLogOptions
	log  *slog.Logger

	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	size    int64
	fresh   bool // a new file: the recorder writes everything again
	failed  bool // a write failed: said once, retried at the next rotation
	pending sync.WaitGroup
}

func openDecisionLog(o DecisionLogOptions) (*decisionLog, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 16 << 20
	}
	if o.Files < 2 {
		o.Files = 8
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	l := &decisionLog{opts: o, log: o.Logger}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// open opens (appending) the current file; an existing one is rotated
// first, so that every file starts with its header.
func (l *decisionLog) open() error {
	path := filepath.Join(l.opts.Dir, logFile)
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		l.rotateFile(path)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	l.f, l.w, l.size, l.fresh = f, bufio.NewWriterSize(f, 64<<10), 0, true
	return l.writeLocked(logRecord{Kind: recHeader, T: time.Now().UTC(), Version: logVersion, Node: l.opts.Node, Build: l.opts.Build})
}

// rotateFile renames the file and compresses it in the background, then
// removes the oldest files beyond the limit.
func (l *decisionLog) rotateFile(path string) {
	name := filepath.Join(l.opts.Dir, "decisions-"+time.Now().UTC().Format("20060102T150405.000000000Z")+".log")
	if err := os.Rename(path, name); err != nil {
		l.log.Warn("decision log: cannot rotate", "err", err)
		return
	}
	l.pending.Add(1)
	go func() {
		defer l.pending.Done()
		if err := gzipFile(name); err != nil {
			l.log.Warn("decision log: cannot compress a rotated file (kept as it is)", "file", name, "err", err)
		}
		l.prune()
	}()
}

func gzipFile(name string) error {
	in, err := os.Open(name)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(name+".gz.tmp", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Rename(name+".gz.tmp", name+".gz"); err != nil {
		return err
	}
	return os.Remove(name)
}

// prune removes the oldest rotated files beyond Files (the current one
// counts).
func (l *decisionLog) prune() {
	old, err := rotatedFiles(l.opts.Dir)
	if err != nil {
		return
	}
	for len(old) > l.opts.Files-1 {
		_ = os.Remove(old[0])
		old = old[1:]
	}
}

// rotatedFiles lists the rotated files of dir, oldest first.
func rotatedFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "decisions-") && (strings.HasSuffix(n, ".log") || strings.HasSuffix(n, ".log.gz")) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out) // the UTC time in the name sorts in time order
	return out, nil
}

// LogFiles lists the files of a decision log directory in the order they
// were written (rotated ones first, the current one last).
func LogFiles(dir string) ([]string, error) {
	out, err := rotatedFiles(dir)
	if err != nil {
		return nil, err
	}
	// A rotation in progress leaves both forms for a moment: keep one.
	seen := map[string]bool{}
	var dedup []string
	for _, f := range out {
		base := strings.TrimSuffix(f, ".gz")
		if seen[base] {
			continue
		}
		seen[base] = true
		if strings.HasSuffix(f, ".log") {
			if _, err := os.Stat(f + ".gz"); err == nil {
				f += ".gz"
			}
		}
		dedup = append(dedup, f)
	}
	if _, err := os.Stat(filepath.Join(dir, logFile)); err == nil {
		dedup = append(dedup, filepath.Join(dir, logFile))
	}
	return dedup, nil
}

// rotateIfFull starts a new file when the current one reached MaxBytes.
func (l *decisionLog) rotateIfFull() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil || l.size < l.opts.MaxBytes {
		return
	}
	_ = l.w.Flush()
	_ = l.f.Close()
	l.f = nil
	if err := l.open(); err != nil {
		l.log.Error("decision log: cannot open a new file: recording stops", "err", err)
	}
}

// write appends rec. A full disk or a write error is logged once and never
// stops the leader.
func (l *decisionLog) write(rec logRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	if err := l.writeLocked(rec); err != nil && !l.failed {
		l.failed = true
		l.log.Error("decision log: write failed: records are lost until it works again", "err", err)
	}
}

// consumeFresh reports (once) that the file is new.
func (l *decisionLog) consumeFresh() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fresh
	l.fresh = false
	return f
}

func (l *decisionLog) writeLocked(rec logRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	n, err := l.w.Write(b)
	l.size += int64(n)
	if err != nil {
		return err
	}
	if err := l.w.Flush(); err != nil {
		return err
	}
	l.failed = false
	return nil
}

func (l *decisionLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.w.Flush()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	l.pending.Wait()
	return err
}

// readLog reads the records of the files, in order. A torn last line (a
// crash mid-write) ends its file with a note; any other bad line is an
// error naming the file and line.
func readLog(files []string, each func(file string, line int, rec logRecord) error) (notes []string, err error) {
	for _, name := range files {
		n, err := readLogFile(name, each)
		if err != nil {
			return notes, err
		}
		notes = append(notes, n...)
	}
	return notes, nil
}

func readLogFile(name string, each func(file string, line int, rec logRecord) error) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	}
	br := bufio.NewReaderSize(r, 1<<20)
	line := 0
	var notes []string
	for {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			line++
			torn := err == io.EOF
			var rec logRecord
			if jerr := json.Unmarshal(b, &rec); jerr != nil {
				if torn {
					notes = append(notes, fmt.Sprintf("%s:%d: a torn last line (the leader stopped while writing it) is ignored", name, line))
					return notes, nil
				}
				return notes, fmt.Errorf("%s:%d: not a decision log record: %v", name, line, jerr)
			}
			if line == 1 && (rec.Kind != recHeader || rec.Version != logVersion) {
				return notes, fmt.Errorf("%s: not a decision log of format %d (first record %q, version %d)", name, logVersion, rec.Kind, rec.Version)
			}
			if cerr := each(name, line, rec); cerr != nil {
				return notes, fmt.Errorf("%s:%d: %w", name, line, cerr)
			}
		}
		if err == io.EOF {
			return notes, nil
		}
		if err != nil {
			return notes, fmt.Errorf("%s: %w", name, err)
		}
	}
}
