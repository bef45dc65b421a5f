package leader

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/pkg/secret"
)

// JoinPath is where the status API mounts JoinHandler.
const JoinPath = "/v1/cluster/join"

// joinTimeout bounds one membership change.
const joinTimeout = 30 * time.Second

// JoinRequest asks the leader to add a voter.
type JoinRequest struct {
	ID   string `json:"id"`   // NODE_NAME of the joining controller
	Addr string `json:"addr"` // its RAFT_ADDR
}

// JoinResponse is the answer of JoinHandler.
type JoinResponse struct {
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
	LeaderID string `json:"leader_id,omitempty"`
}

// ErrVoterExists is returned by Join when the new voter would replace a
// server the joining controller has not authenticated as.
var ErrVoterExists = errors.New("a server with that id or address is in the Raft configuration")

// Join adds id at addr as a voter. A voter with the same id and address is
// already there (no-op). A server with the same id at another address, or
// another id at the same address (a controller that was rebuilt, or
// moved), is removed first, but only when mayReplace(its id) says the
// joining controller proved to be that server (a certificate naming it);
// otherwise, and always when mayReplace is nil, Join refuses with
// ErrVoterExists: the operator removes the old entry first (an audited
// `iha controllers remove`). Leader only: a follower gets an error
// wrapping ErrNotLeader.
func (n *Node) Join(ctx context.Context, id, addr string, mayReplace func(existingID string) bool) error {
	if id == "" || addr == "" {
		return errors.New("join: id and addr are required")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("join %s: addr %q is not host:port: %w", id, addr, err)
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("join %s: %w", id, err)
	}
	for _, s := range cf.Configuration().Servers {
		sameID, sameAddr := s.ID == raft.ServerID(id), s.Address == raft.ServerAddress(addr)
		switch {
		case sameID && sameAddr && s.Suffrage == raft.Voter:
			n.log.Info("join: already a voter", "node", id, "addr", addr)
			return nil
		case sameID || sameAddr:
			if mayReplace == nil || !mayReplace(string(s.ID)) {
				return fmt.Errorf("join %s at %s: %w: %s at %s; a join never replaces a server it has not authenticated as: "+
					"remove it first (iha controllers remove %s), or join with a RAFT_TLS_CERT that names %s",
					id, addr, ErrVoterExists, s.ID, s.Address, s.ID, s.ID)
			}
			n.log.Warn("join: removing a conflicting server first", "node", string(s.ID), "addr", string(s.Address),
				"joining_node", id, "joining_addr", addr)
			if err := n.raft.RemoveServer(s.ID, 0, joinTimeout).Error(); err != nil {
				return fmt.Errorf("join %s: remove conflicting %s at %s: %w", id, s.ID, s.Address, err)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, joinTimeout).Error(); err != nil {
		return fmt.Errorf("join %s at %s: %w", id, addr, err)
	}
	n.log.Info("join: voter added", "node", id, "addr", addr)
	return nil
}

// Remove takes server id out of the Raft configuration (leader only).
func (n *Node) Remove(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, joinTimeout).Error(); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

// JoinHandler serves POST JoinPath with a JoinRequest body. Nothing in the
// request is believed before its proof:
//
//   - with Raft over TLS (NodeConfig.TLS) the request must arrive over TLS
//     with a client certificate of the CA that names the joining address's
//     host (the status API serves it with ClientAuth RequestClientCert or
//     stronger): a controller without the cluster's certificate cannot add
//     itself, nor add an address it does not own;
//   - without TLS it must carry the write token (NodeConfig.JoinToken, the
//     status API's API_TOKEN) as `Authorization: Bearer`;
//   - with neither, every join is refused.
//
// A join replaces an existing server (same id or same address) only when
// its certificate names that server's id (common name or DNS SAN); a join
// proved by the token never replaces one (Join's mayReplace). Every refusal
// is logged with the request's source address.
//
// On the leader it calls Join; on a follower it redirects (307) to the
// leader's status API as the leader recorded it at the start of its term
// (the request is repeated there by the client, as rqlite's join
// redirect), or answers 503 when no leader is known yet.
func (n *Node) JoinHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJoin(w, http.StatusMethodNotAllowed, JoinResponse{Error: "POST only"})
			return
		}
		var req JoinRequest
		if err := DecodeStrictJSON(io.LimitReader(r.Body, 64<<10), &req); err != nil {
			writeJoin(w, http.StatusBadRequest, JoinResponse{Error: "body is not a join request: " + err.Error()})
			return
		}
		if req.ID == "" || req.Addr == "" {
			writeJoin(w, http.StatusBadRequest, JoinResponse{Error: "id and addr are required"})
			return
		}
		refuse := func(code int, err error) {
			n.log.Warn("join refused", "node", req.ID, "addr", req.Addr, "from", r.RemoteAddr, "err", err)
			writeJoin(w, code, JoinResponse{Error: err.Error()})
		}
		var mayReplace func(string) bool
		switch {
		case n.tls != nil:
			leaf, err := peerMayJoin(r, req.Addr, n.tls.ClientCAs)
			if err != nil {
				refuse(http.StatusForbidden, err)
				return
			}
			mayReplace = func(id string) bool { return certNames(leaf, id) }
		case !n.joinToken.IsZero():
			if !bearerIs(r, n.joinToken.Reveal()) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="iha"`)
				refuse(http.StatusUnauthorized, errors.New("join needs proof: the write token (API_TOKEN) as Authorization: Bearer, since this controller runs Raft without TLS (RAFT_TLS_*)"))
				return
			}
		default:
			refuse(http.StatusForbidden, errors.New("joins are refused: this controller has neither RAFT_TLS_* (mutual TLS) nor API_TOKEN to check a joining controller's proof"))
			return
		}
		if !n.IsLeader() {
			_, lid := n.Leader()
			li := n.fsm.LeaderInfo()
			if lid == "" || li.NodeID != lid || li.APIAddr == "" {
				writeJoin(w, http.StatusServiceUnavailable, JoinResponse{Error: "no leader known yet", LeaderID: lid})
				return
			}
			http.Redirect(w, r, apiURL(li.APIAddr, r.TLS != nil)+r.URL.RequestURI(), http.StatusTemporaryRedirect)
			return
		}
		if err := n.Join(r.Context(), req.ID, req.Addr, mayReplace); err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, ErrVoterExists):
				refuse(http.StatusConflict, err)
				return
			case errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress):
				code = http.StatusServiceUnavailable
			}
			writeJoin(w, code, JoinResponse{Error: err.Error()})
			return
		}
		writeJoin(w, http.StatusOK, JoinResponse{OK: true, LeaderID: n.id})
	})
}

// DecodeStrictJSON decodes one JSON value from r into v: unknown fields and
// anything after the value (a second object, stray bytes) are errors, so
// that a body means exactly one thing.
func DecodeStrictJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if err := dec.Decode(new(json.RawMessage)); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// bearerIs reports whether r carries tok as its bearer token (constant
// time).
func bearerIs(r *http.Request, tok string) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(tok)) == 1
}

// certNames reports whether a controller's certificate names server id:
// its common name or one of its DNS names is id.
func certNames(c *x509.Certificate, id string) bool {
	return c.Subject.CommonName == id || slices.Contains(c.DNSNames, id)
}

// peerMayJoin checks the client certificate of a join request: it must
// chain to roots (RAFT_TLS_CA) for client authentication and name the host
// of the Raft address the request adds. The chain is verified here, not
// left to the listener: the status API's listener only requests a
// certificate (its own pool holds the system roots, which must never admit
// a controller), and the refusal then reaches the joining controller as a
// 403 that says why instead of a failed handshake. It returns the verified
// certificate.
func peerMayJoin(r *http.Request, addr string, roots *x509.CertPool) (*x509.Certificate, error) {
	if r.TLS == nil {
		return nil, errors.New("join needs TLS with a client certificate of the cluster CA (RAFT_TLS_CA): this request came over plain HTTP; set API_TLS_CERT/API_TLS_KEY on the members")
	}
	if len(r.TLS.PeerCertificates) == 0 {
		return nil, errors.New("join needs a client certificate of the cluster CA (RAFT_TLS_CA): none was presented")
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the client certificate %q is not one of the cluster CA (RAFT_TLS_CA): %w", leaf.Subject.CommonName, err)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("addr %q is not host:port", addr)
	}
	if err := leaf.VerifyHostname(host); err != nil {
		return nil, fmt.Errorf("the client certificate does not cover %s: %w", host, err)
	}
	return leaf, nil
}

func writeJoin(w http.ResponseWriter, code int, resp JoinResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(resp)
}

// apiURL turns a status API address (host:port or URL) into a base URL.
func apiURL(a string, tlsOn bool) string {
	if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
		return strings.TrimRight(a, "/")
	}
	if tlsOn {
		return "https://" + a
	}
	return "http://" + a
}

// JoinOptions configure JoinCluster.
type JoinOptions struct {
	// Targets are status API addresses of members (RAFT_JOIN): host:port
	// (https when TLS is set, else http) or full URLs. Any member will do:
	// followers redirect to the leader.
	Targets []string
	ID      string // this node's NODE_NAME
	Addr    string // this node's RAFT_ADDR
	// TLS is the client configuration (LoadTLS); its certificate proves
	// this controller belongs to the cluster.
	TLS *tls.Config
	// Token is the proof without TLS: the cluster's write token
	// (API_TOKEN), sent as `Authorization: Bearer` to the members and,
	// after a follower's redirect, to the leader. Unused with TLS.
	Token secret.Secret
	// Retry is the pause after the first round over all targets (default
	// 2 s); it doubles after each failed round up to MaxRetry (default
	// 30 s), so a controller started long before its members does not
	// flood their logs.
	Retry, MaxRetry time.Duration
	Logger          *slog.Logger
}

// JoinCluster asks the members in opts.Targets, in order, to add this node
// as a voter, until one accepts or ctx ends. Call it after OpenNode with
// NodeConfig.NoBootstrap (RAFT_JOIN set), so the node has not bootstrapped a
// group of its own. Joining again later is harmless: a voter that is
// already there with the same id and address is a no-op.
func JoinCluster(ctx context.Context, opts JoinOptions) error {
	if len(opts.Targets) == 0 {
		return errors.New("join: no member addresses (RAFT_JOIN)")
	}
	if opts.Retry <= 0 {
		opts.Retry = 2 * time.Second
	}
	if opts.MaxRetry < opts.Retry {
		opts.MaxRetry = max(opts.Retry, 30*time.Second)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{TLSClientConfig: opts.TLS, ForceAttemptHTTP2: false}
	defer tr.CloseIdleConnections()
	tok := ""
	if opts.TLS == nil {
		tok = opts.Token.Reveal()
	}
	client := &http.Client{Transport: tr, Timeout: joinTimeout + 10*time.Second,
		// A follower redirects to the leader; Go drops Authorization on a
		// redirect to another host, so the proof is sent again.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("join: too many redirects")
			}
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			return nil
		}}
	body, _ := json.Marshal(JoinRequest{ID: opts.ID, Addr: opts.Addr})
	var last error
	pause := opts.Retry
	for round := 1; ; round++ {
		for _, t := range opts.Targets {
			u := apiURL(t, opts.TLS != nil) + JoinPath
			if strings.Contains(strings.TrimPrefix(strings.TrimPrefix(t, "https://"), "http://"), "/") {
				u = strings.TrimRight(t, "/") // a full URL of the handler
			}
			err := joinOnce(ctx, client, u, body, tok)
			if err == nil {
				opts.Logger.Info("joined the Raft group", "node", opts.ID, "via", t)
				return nil
			}
			if ctx.Err() != nil {
				// The attempt cut short by the end of the wait says
				// nothing: the error names the last answer a controller
				// gave (or this attempt's, when there was none).
				if last == nil {
					last = err
				}
				return fmt.Errorf("join: gave up: %w (last: %v)", ctx.Err(), last)
			}
			last = err
			opts.Logger.Warn("join attempt failed", "via", t, "round", round, "err", err)
		}
		opts.Logger.Info("join: retrying", "after", pause, "round", round)
		select {
		case <-ctx.Done():
			return fmt.Errorf("join: gave up: %w (last: %v)", ctx.Err(), last)
		case <-time.After(pause):
		}
		pause = min(2*pause, opts.MaxRetry)
	}
}

func joinOnce(ctx context.Context, client *http.Client, u string, body []byte, tok string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var jr JoinResponse
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&jr)
	if resp.StatusCode != http.StatusOK || !jr.OK {
		return fmt.Errorf("%s: %s: %s", u, resp.Status, jr.Error)
	}
	return nil
}
