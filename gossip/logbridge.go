package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
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
// The wording is memberlist v0.5.4's (pinned in go.mod); mesh_test.go fails
// if an upgrade changes it. Write is called from memberlist's goroutines,
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
	l.m.log.Log(context.Background(), level, line, "component", "memberlist", "node", l.m.self)
	if act := l.observe(line); act != nil {
		select {
		case l.m.logActs <- act:
		default:
			l.m.stats.logActsDropped.Add(1)
		}
	}
	return len(p), nil
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
