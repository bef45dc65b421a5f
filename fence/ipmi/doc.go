// Package ipmi is the IPMI fencing driver: it powers compute hosts off and
// on through their BMC over IPMI 2.0 (RMCP+, "lanplus"), speaking the
// protocol itself with github.com/bougou/go-ipmi.
//
// It owns one thing: turning a fencing.yaml `agent: ipmi` entry into a
// fence.Fencer whose PowerOff returns nil only once the BMC reports the
// chassis off. The behaviour follows InstanceHA's ipmitool driver
// (docs/rules.md R9.3): ipaddr must be an IP literal,
// port 1–65535, login `^[a-zA-Z0-9_-]{1,64}$`; timeout is the entry's
// `timeout` or FENCING_TIMEOUT; up to three attempts with back-off 1 s then
// 2 s on network errors; power off is confirmed by polling the chassis
// status. Differences, on purpose:
//
//   - the timeout bounds the whole operation (every attempt, back-off and the
//     confirmation polling), so a caller knows when PowerOff returns;
//   - the status is read before power down (for the log) and polled every
//     250 ms after it; power down is sent even to a host that reads off, so
//     that an off read in the middle of a power cycle cannot leave a host
//     that comes back on (as the redfish driver, fence/DESIGN.md); a BMC
//     that refuses power down of a host already off counts as fenced once
//     its status reads off;
//   - refused credentials fail at once (fence.ErrAuth) instead of costing
//     three attempts;
//   - cipher suite 3 is asked for directly (probing costs seconds).
//
// Every call opens its own RMCP+ session and closes it before returning: a
// BMC allows few sessions, and a leader must not hold them between fences.
//
// It must never shell out to ipmitool, never decide whether a host should be
// fenced (the leader does), and never put the BMC password in an error, a
// log record or a panic: the password lives in a secret.Secret and is
// revealed only to go-ipmi, and go-ipmi's error texts are scrubbed of it.
package ipmi
