package leader

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// LoadTLS builds the mutual-TLS configuration of the controllers from
// RAFT_TLS_CERT, RAFT_TLS_KEY and RAFT_TLS_CA: this node presents cert/key,
// and accepts (as server) and trusts (as client) only peers whose
// certificate chains to the CA. The same *tls.Config serves both roles.
// A peer's certificate must also name the host of the address it is dialled
// at (an IP SAN for an IP address). TLS 1.2 is the minimum.
func LoadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("raft tls: RAFT_TLS_CERT, RAFT_TLS_KEY and RAFT_TLS_CA must be set together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// The error of LoadX509KeyPair names no key material, only the parse problem.
		return nil, fmt.Errorf("raft tls: load %s / %s: %w", certFile, keyFile, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("raft tls: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("raft tls: %s holds no PEM certificate", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// NewTLSStreamLayer is a raft.StreamLayer over ln that speaks mutual TLS
// with cfg (from LoadTLS): an inbound connection that does not present a
// certificate of the CA fails its handshake before raft reads a byte, and
// an outbound one fails unless the peer's certificate chains to the CA and
// names the dialled host.
func NewTLSStreamLayer(ln net.Listener, cfg *tls.Config) raft.StreamLayer {
	return &tlsLayer{ln: ln, cfg: cfg}
}

type tlsLayer struct {
	ln  net.Listener
	cfg *tls.Config
}

// handshakeTimeout bounds a TLS handshake, so a peer that connects and
// says nothing cannot hold a raft connection handler.
const handshakeTimeout = 10 * time.Second

func (l *tlsLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	// The handshake runs on the first Read, in raft's per-connection
	// goroutine, so one slow peer never blocks the accept loop; a deadline
	// bounds it.
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	return &handshakeConn{Conn: tls.Server(c, l.cfg)}, nil
}

func (l *tlsLayer) Close() error   { return l.ln.Close() }
func (l *tlsLayer) Addr() net.Addr { return l.ln.Addr() }

func (l *tlsLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, fmt.Errorf("raft tls: dial %s: %w", addr, err)
	}
	cfg := l.cfg.Clone()
	cfg.ServerName = host
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(addr), cfg)
	if err != nil {
		return nil, fmt.Errorf("raft tls: dial %s: %w", addr, err)
	}
	return c, nil
}

// handshakeConn clears the handshake deadline once the handshake is done;
// raft sets its own deadlines per RPC after that.
type handshakeConn struct {
	*tls.Conn
	once sync.Once
	herr error
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		c.herr = c.Conn.Handshake()
		if c.herr == nil {
			_ = c.Conn.SetDeadline(time.Time{})
		}
	})
	return c.herr
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *handshakeConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// NewTCPStreamLayer is a plain-TCP raft.StreamLayer over ln (no TLS). Use it
// when the listener must exist before the node (a port chosen by the
// kernel, a test that wraps the layer).
func NewTCPStreamLayer(ln net.Listener) raft.StreamLayer { return &tcpLayer{ln: ln} }

type tcpLayer struct{ ln net.Listener }

func (l *tcpLayer) Accept() (net.Conn, error) { return l.ln.Accept() }
func (l *tcpLayer) Close() error              { return l.ln.Close() }
func (l *tcpLayer) Addr() net.Addr            { return l.ln.Addr() }
func (l *tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}
