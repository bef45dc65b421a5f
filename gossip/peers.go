package gossip

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Peer questions: a member asks the live members of a role a question and
// collects their answers for a while (the agent asks its peers whether they
// reach a controller when its watchdog lease runs out). Questions and
// answers are single UDP packets: a member that cannot be reached is one
// that does not answer, and the asker asks again next round. What is asked
// and answered is the caller's (opaque bytes); the mesh only carries it, so
// answers are as trustworthy as the mesh's keyring: callers that need more
// sign what they answer.

// maxAnswer bounds an answer's payload (it must fit one gossip packet).
const maxAnswer = 700

// PeerAnswer is one member's answer.
type PeerAnswer struct {
	Node string
	Data []byte
}

// SetAnswerer sets what this member answers to peers' questions (nil: it
// does not answer). answer is called outside memberlist's locks and must
// be quick; an answer longer than 700 bytes is not sent.
func (m *Mesh) SetAnswerer(answer func() []byte) {
	if answer == nil {
		m.answerer.Store(nil)
		return
	}
	m.answerer.Store(&answer)
}

// AskPeers sends a question to every live (or suspect) member of role
// other than this one and returns the answers that arrive before timeout
// or ctx ends, and how many members were asked.
func (m *Mesh) AskPeers(ctx context.Context, role Role, timeout time.Duration) ([]PeerAnswer, int) {
	env := m.newEnvelope(msgPeerAsk, m.self)
	b, err := env.encode()
	if err != nil {
		return nil, 0
	}
	ch := make(chan PeerAnswer, 256)
	m.askMu.Lock()
	m.asks[env.ID] = ch
	m.askMu.Unlock()
	defer func() {
		m.askMu.Lock()
		delete(m.asks, env.ID)
		m.askMu.Unlock()
	}()
	targets := m.nodesOf(role)
	for _, n := range targets {
		if err := m.ml.SendBestEffort(n, b); err != nil {
			m.log.Debug("gossip: question not sent", "node", n.Name, "err", err)
		}
	}
	var out []PeerAnswer
	seen := map[string]bool{}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for len(seen) < len(targets) {
		select {
		case a := <-ch:
			if !seen[a.Node] {
				seen[a.Node] = true
				out = append(out, a)
			}
		case <-t.C:
			return out, len(targets)
		case <-ctx.Done():
			return out, len(targets)
		}
	}
	return out, len(targets)
}

// nodesOf lists the live and suspect members of role other than this node.
func (m *Mesh) nodesOf(role Role) []*memberlist.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*memberlist.Node
	for _, mem := range m.members {
		if mem.Name == m.self || mem.Meta.Role != role || (mem.State != StateAlive && mem.State != StateSuspect) {
			continue
		}
		if n := nodeOf(mem); n != nil {
			out = append(out, n)
		}
	}
	return out
}

func nodeOf(mem *Member) *memberlist.Node {
	host, port, err := net.SplitHostPort(mem.Addr)
	if err != nil {
		return nil
	}
	p, _ := strconv.Atoi(port)
	return &memberlist.Node{Name: mem.Name, Addr: net.ParseIP(host), Port: uint16(p)}
}

// answerPeer answers a question, from the sender goroutine (never under
// memberlist's locks).
func (m *Mesh) answerPeer(ask envelope) {
	f := m.answerer.Load()
	if f == nil {
		return
	}
	m.mu.Lock()
	mem := m.members[ask.From]
	var to *memberlist.Node
	if mem != nil {
		to = nodeOf(mem)
	}
	m.mu.Unlock()
	if to == nil {
		return
	}
	select {
	case m.sendCh <- func() {
		data := (*f)()
		if len(data) == 0 || len(data) > maxAnswer {
			return
		}
		env := m.newEnvelope(msgPeerAnswer, ask.From)
		env.Ref, env.Data = ask.ID, data
		b, err := env.encode()
		if err != nil {
			return
		}
		if err := m.ml.SendBestEffort(to, b); err != nil {
			m.log.Debug("gossip: answer not sent", "node", to.Name, "err", err)
		}
	}:
	default:
	}
}

func (m *Mesh) deliverAnswer(env envelope) {
	if env.Node != m.self {
		return
	}
	m.askMu.Lock()
	ch := m.asks[env.Ref]
	m.askMu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- PeerAnswer{Node: env.From, Data: env.Data}:
	default:
	}
}
