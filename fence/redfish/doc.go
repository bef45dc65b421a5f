// Package redfish is the Redfish fencing driver (fencing.yaml agent
// redfish), built on gofish.
//
// It owns the Redfish conversation with one BMC: connect with basic or
// session auth over HTTP or HTTPS (SSL_VERIFY, SSL_CA_BUNDLE, SSL_CERT_PATH,
// SSL_KEY_PATH), find the system (the configured uuid, or the only system),
// ForceOff and poll PowerState until Off, On, and read the state, with
// InstanceHA's outcome table: 400/409 on a host already off is fenced,
// 401/403 fail at once, 5xx and network errors are retried three times with
// a 1 s then 2 s back-off.
//
// It must never decide whether to fence, never report off without reading
// Off from the BMC, and never put the BMC password in a log line, an error
// or anything a panic could print.
package redfish
