// Package api is IHA's status API: the versioned JSON wire types (under
// /v1), the HTTP server that every iha-leader serves, and the Go client that
// the `iha` CLI uses.
//
// It owns the HTTP surface: routing, authentication (read and read-write
// tokens), input validation, forwarding to the Raft leader, server-sent
// event streams, /healthz and /readyz. It reads and changes the cluster
// only through the Backend interface, which the leader package implements
// over its Raft node; this package must never import the daemons (leader,
// agent, gossip) nor hold state of its own beyond a request.
//
// Authentication, as decided for issue 6:
//   - API_TOKEN (read-write) is required for every mutation. When it is not
//     configured, mutations are refused (403) on every node: there is no
//     anonymous way to pause recovery or confirm a fence.
//   - API_READ_TOKEN (read-only) is optional. When it is set, reads need
//     either token; when it is not set, reads are open (they carry no
//     secrets, and operators at 3 a.m. should not hunt for a token to see
//     what happened). A read-only token on a mutation is answered 403, no
//     token or an unknown token 401.
//   - /healthz, /readyz, /metrics and the agents' /v1/gate/{host} never need
//     a token: probes, Prometheus and computes hold no credentials.
//
// Tokens are sent as "Authorization: Bearer <token>" and compared in
// constant time; they never appear in a response, an error or a log line.
package api
