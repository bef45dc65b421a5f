package lease

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestRequestSignatureCoversEveryField(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	r := Request{Host: "compute-1", Boot: "b1", Seq: 42, Sent: at(0), Armed: true, W: 10 * time.Second, Nonce: "n1"}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	r.Sign(key)
	if err := r.Verify(key); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Request){
		"host":    func(r *Request) { r.Host = "compute-2" },
		"boot":    func(r *Request) { r.Boot = "b2" },
		"seq":     func(r *Request) { r.Seq++ },
		"sent":    func(r *Request) { r.Sent = r.Sent.Add(time.Nanosecond) },
		"armed":   func(r *Request) { r.Armed = false },
		"w":       func(r *Request) { r.W++ },
		"release": func(r *Request) { r.Release = true },
		"nonce":   func(r *Request) { r.Nonce = "n2" },
		"ack":     func(r *Request) { r.Ack = at(1) },
	} {
		c := r
		mod(&c)
		if err := c.Verify(key); !errors.Is(err, ErrSignature) {
			t.Errorf("changing %s: Verify = %v, want ErrSignature", name, err)
		}
	}
	if err := r.Verify([]byte("another key")); !errors.Is(err, ErrSignature) {
		t.Errorf("another key: %v", err)
	}
}

func TestRequestCheck(t *testing.T) {
	ok := Request{Host: "compute-1", Boot: "b", Seq: 1, Sent: at(0), Nonce: "n"}
	for name, mod := range map[string]func(*Request){
		"bad host":     func(r *Request) { r.Host = "../x" },
		"no boot":      func(r *Request) { r.Boot = "" },
		"seq zero":     func(r *Request) { r.Seq = 0 },
		"no nonce":     func(r *Request) { r.Nonce = "" },
		"armed no W":   func(r *Request) { r.Armed = true },
		"W too long":   func(r *Request) { r.Armed, r.W = true, MaxW+1 },
		"W not armed":  func(r *Request) { r.W = time.Second },
		"no sent time": func(r *Request) { r.Sent = time.Time{} },
	} {
		c := ok
		mod(&c)
		if err := c.Check(); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: Check = %v, want ErrBadRequest", name, err)
		}
	}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestGrantVerification(t *testing.T) {
	hostKey := []byte("host key of compute-1 ..........")
	priv := TicketKeyFrom([]byte("cluster secret"))
	pub := EncodeTicketKey(priv.Public().(ed25519.PublicKey))
	p := DefaultParams(15 * time.Second)
	mk := func() Grant {
		tk := SignTicket(priv, Ticket{Host: "compute-1", Grant: at(3), Holders: 4, L: p.L})
		g := Grant{Host: "compute-1", Granted: true, Params: p, Ticket: &tk, TicketKey: pub, Nonce: "n1"}
		g.Sign(hostKey)
		return g
	}
	if err := mk().Verify(hostKey, "compute-1", "n1"); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mod         func(*Grant)
		host, nonce string
	}{
		"another request":        {func(*Grant) {}, "compute-1", "n2"},
		"another host":           {func(*Grant) {}, "compute-2", "n1"},
		"unsigned change":        {func(g *Grant) { g.Params.L *= 2 }, "compute-1", "n1"},
		"ticket of another host": {func(g *Grant) { g.Ticket.Host = "compute-2"; g.Sign(hostKey) }, "compute-1", "n1"},
		"forged ticket": {func(g *Grant) {
			other := TicketKeyFrom([]byte("not the cluster"))
			tk := SignTicket(other, *g.Ticket)
			g.Ticket = &tk
			g.Sign(hostKey)
		}, "compute-1", "n1"},
		"ticket key swapped with the signer's": {func(g *Grant) {
			other := TicketKeyFrom([]byte("rogue"))
			tk := SignTicket(other, *g.Ticket)
			g.Ticket, g.TicketKey = &tk, EncodeTicketKey(other.Public().(ed25519.PublicKey))
		}, "compute-1", "n1"},
	} {
		g := mk()
		tc.mod(&g)
		if err := g.Verify(hostKey, tc.host, tc.nonce); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: Verify = %v, want ErrSignature", name, err)
		}
	}
	refused := Grant{Host: "compute-1", Reason: "host is in recovery", Nonce: "n1"}
	refused.Sign(hostKey)
	if err := refused.Verify(hostKey, "compute-1", "n1"); err != nil {
		t.Fatalf("a signed refusal: %v", err)
	}
}
