// Package agent is the compute-side daemon of IHA (iha-agent): it keeps the
// compute in the gossip mesh, listens for fence_kdump packets and relays
// them to the controllers, tells systemd when it is ready, and implements
// the nova-compute gate.
//
// What it owns:
//   - Agent: wiring of the mesh (gossip.Mesh, role compute, advertising the
//     Nova host name), the kdump Receiver, sd_notify and the controllers
//     file the gate reads.
//   - Receiver: fence_kdump packets on UDP (default port 7410, env UDP_PORT),
//     both byte orders; the source address is mapped to a Nova host through
//     the mesh members' addresses, then a configured map, then reverse DNS
//     (short name); malformed packets, floods and unresolved sources are
//     dropped and counted; each source is relayed at most once per
//     RelayInterval (fence_kdump_send repeats every 10 s).
//   - Gate: `iha-agent gate`, run as ExecStartPre of nova-compute, asks the
//     controllers' status API whether this host's recovery is finished.
//   - Notify: sd_notify in forty lines.
//
// What it must never do: hold or load Nova or BMC credentials, or import
// leader, fence, pkg/nova, pkg/config (it pulls in gophercloud),
// gophercloud, gofish, go-ipmi or client-go: a compromised compute must not
// be able to fence or evacuate anything. cmd/iha-agent's import test
// enforces it. It decides nothing about hosts: the leader does.
package agent
