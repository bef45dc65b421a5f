package main

import (
	"net"

	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/config"
)

// securityOf is what /v1/cluster and `iha status` report of this
// controller's protections; each warning is also logged at every start.
func securityOf(s config.Settings) api.Security {
	sec := api.Security{RaftTLS: s.RaftTLSCert != "", APITLS: s.APITLSCert != ""}
	if !sec.RaftTLS {
		sec.Warnings = append(sec.Warnings, "raft without TLS (RAFT_TLS_*)")
	}
	if h, _, err := net.SplitHostPort(s.APIAddr); !sec.APITLS && (err != nil || h == "" || !loopbackHost(h)) {
		sec.Warnings = append(sec.Warnings, "status API over plain HTTP beyond loopback (API_TLS_*)")
	}
	if s.MeshEnabled() {
		sec.MeshEncrypted = s.GossipKeyring != ""
		if !sec.MeshEncrypted {
			sec.Warnings = append(sec.Warnings, "mesh not encrypted (GOSSIP_INSECURE)")
		}
		sec.MeshIdentity = s.ClusterKey != ""
		if !sec.MeshIdentity {
			sec.Warnings = append(sec.Warnings, "mesh members' hosts not checked (no CLUSTER_KEY, GOSSIP_INSECURE)")
		}
	}
	return sec
}

func loopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}
