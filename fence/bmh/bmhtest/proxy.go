package bmhtest

import (
	"io"
	"net"
	"sync"
	"time"
)

// SlowProxy is a TCP proxy on 127.0.0.1 in front of the API server. TLS
// passes through untouched; SetDelay holds every chunk of the server's
// answers for a while, which is how a test makes the API server slow.
type SlowProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	delay   time.Duration
	changed chan struct{} // closed and replaced on every SetDelay
	closed  chan struct{}
	conns   map[net.Conn]bool
	wg      sync.WaitGroup
}

// NewSlowProxy listens on a free loopback port and forwards to target
// (host:port).
func NewSlowProxy(target string) (*SlowProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &SlowProxy{ln: ln, target: target, changed: make(chan struct{}), closed: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *SlowProxy) Addr() string { return p.ln.Addr().String() }

// SetDelay delays every later (and every waiting) chunk of the answers by
// d after it arrived; 0 lets everything through at once.
func (p *SlowProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Close stops the proxy and cuts every connection.
func (p *SlowProxy) Close() {
	p.mu.Lock()
	select {
	case <-p.closed:
		p.mu.Unlock()
		return
	default:
	}
	close(p.closed)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *SlowProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		c.Close()
		return false
	default:
	}
	p.conns[c] = true
	return true
}

func (p *SlowProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *SlowProxy) serve(client net.Conn) {
	defer client.Close()
	up, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { // requests pass at once
		_, _ = io.Copy(up, client)
		done <- struct{}{}
	}()
	go func() { // answers wait
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				if !p.hold(time.Now()) {
					break
				}
				if _, werr := client.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
	client.Close()
	up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, up)
	p.mu.Unlock()
}

// hold waits until the chunk that arrived at t may pass; false when the
// proxy closed.
func (p *SlowProxy) hold(t time.Time) bool {
	for {
		p.mu.Lock()
		d, changed := p.delay, p.changed
		p.mu.Unlock()
		wait := time.Until(t.Add(d))
		if wait <= 0 {
			return true
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-changed:
		case <-p.closed:
			timer.Stop()
			return false
		}
		timer.Stop()
	}
}
