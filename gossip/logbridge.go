package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// logBridge turns memberlist's log lines ("[LEVEL] memberlist: text") into
// slog records, and reads the three facts memberlist only logs:
//
//   - "Suspect X has failed, no acks received": this node accuses X;
//   - "Marking X as failed, suspect timeout reached (N peer confirmations)":
//     this node's suspicion timer declared X dead with N confirmations;
//   - "Refuting a suspect message (from: F)": this node was suspected by F.
//
// memberlist has no hook for these three: its delegates (Delegate,
// EventDelegate, ConflictDelegate, MergeDelegate, AliveDelegate, and
// PingDelegate, which sees successful probes only) report joins, leaves,
// updates, merges and acks, never a suspicion, its accuser or a
// refutation. What a delegate does report comes from the delegate (a
// death: EventDelegate.NotifyLeave). The wording is memberlist v0.5.4's
// (pinned in go.mod); TestMemberlistStillLogsWhatTheBridgeReads
// (logbridge_test.go) fails if an upgrade changes it. Write is called from memberlist's goroutines,
// sometimes with its node lock held, and log.Logger serialises writers: it
// must never block, so what it observes runs later on the mesh's
// log-action goroutine (dropped and counted if that falls far behind).
type logBridge struct {
	m          *Mesh
	lastRefute atomic.Int64
}

var (
	reSuspect = regexp.MustCompile(`^Suspect (\S+) has failed, no acks received`)
	reMarked  = regexp.MustCompile(`^Marking (\S+) as failed, suspect timeout reached \((\d+) peer confirmations\)`)
	reRefute  = regexp.MustCompile(`^Refuting a suspect message \(from: (\S+)\)`)
)

func (l *logBridge) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	if len(line) > 2 && line[0] == '[' {
		if i := bytes.IndexByte(p, ']'); i > 0 {
			switch string(bytes.TrimSpace(p)[1:i]) {
			case "DEBUG":
				level = slog.LevelDebug
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = string(bytes.TrimSpace(bytes.TrimSpace(p)[i+1:]))
		}
	}
	if len(line) > 11 && line[:11] == "memberlist:" {
		line = line[12:]
	}
	level, msg := relevel(level, line)
	l.m.log.Log(context.Background(), level, msg, "component", "memberlist", "node", l.m.self)
	if act := l.observe(line); act != nil {
		select {
		case l.m.logActs <- act:
		default:
			l.m.stats.logActsDropped.Add(1)
		}
	}
	return len(p), nil
}

// relevels are memberlist lines whose level says more than they mean to an
// operator: the ordinary traces of a peer that stopped answering (which the
// mesh reports itself, as suspect and dead events with their accusers), and
// a member that came back under a new address. memberlist logs them as
// errors; an operator has nothing to do about them.
var relevels = []struct {
	prefix string
	level  slog.Level
	note   string // appended to the message, "" for none
}{
	{"Failed fallback TCP ping:", slog.LevelDebug, ""},
	{"Failed to send UDP ping:", slog.LevelInfo, ""},
	{"Failed to send indirect UDP ping:", slog.LevelInfo, ""},
	{"Failed to send UDP compound ping", slog.LevelInfo, ""},
	{"Failed to send gossip to", slog.LevelDebug, ""},
	{"Push/Pull with ", slog.LevelInfo, ""},
	{"Refuting a suspect message", slog.LevelInfo, " (this member was slow to answer a probe; it is alive)"},
	{"Conflicting address for ", slog.LevelWarn,
		" (a member restarted under the same name at a new address: it is accepted once the old address is declared dead)"},
}

// relevel returns the level and message an operator should see for one of
// memberlist's lines.
func relevel(level slog.Level, line string) (slog.Level, string) {
	for _, r := range relevels {
		if strings.HasPrefix(line, r.prefix) {
			return r.level, line + r.note
		}
	}
	return level, line
}

// observe returns what to do about a line, or nil.
func (l *logBridge) observe(line string) func() {
	m := l.m
	if s := reSuspect.FindStringSubmatch(line); s != nil {
		return func() {
			m.markSuspect(s[1], m.self)
			m.tellControllers(m.newEnvelope(msgAccuse, s[1]))
		}
	}
	if s := reMarked.FindStringSubmatch(line); s != nil {
		// Recorded synchronously (only m.mu, never held while calling
		// memberlist): memberlist calls NotifyLeave right after this line
		// and the dead event must carry the count.
		c, _ := strconv.Atoi(s[2])
		m.mu.Lock()
		m.confirmations[s[1]] = c
		m.mu.Unlock()
		return nil
	}
	if s := reRefute.FindStringSubmatch(line); s != nil {
		// memberlist refutes every repeated accusation; one message a
		// second is plenty.
		now := time.Now().UnixNano()
		if last := l.lastRefute.Load(); now-last < int64(time.Second) || !l.lastRefute.CompareAndSwap(last, now) {
			return nil
		}
		return func() {
			env := m.newEnvelope(msgRefute, m.self)
			env.Accuser = s[1]
			m.tellControllers(env)
		}
	}
	return nil
}
