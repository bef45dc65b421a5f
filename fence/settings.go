package fence

import "time"

// Settings are the few global settings a driver reads: the only part of
// IHA's configuration (config.Settings, over seventy keys) a Constructor
// sees. fence/drivers builds them once from config.Settings; a test or a
// tool builds them directly. The zero value is safe: certificates are
// verified and each driver uses its own default timeout.
type Settings struct {
	// Timeout is FENCING_TIMEOUT: the timeout of an entry that sets none,
	// per BMC request and for the wait for power off. Zero: the driver's
	// default.
	Timeout time.Duration
	// TLS is how a driver speaking HTTPS to a BMC (redfish with tls: true)
	// authenticates it and itself.
	TLS TLS
}

// TLS holds SSL_VERIFY, SSL_CA_BUNDLE, SSL_CERT_PATH and SSL_KEY_PATH.
type TLS struct {
	// Insecure is SSL_VERIFY false: the BMC's certificate is not verified.
	// Inverted so that the zero value verifies.
	Insecure bool
	// CABundle replaces the system roots when the file exists.
	CABundle string
	// CertPath and KeyPath are the client certificate, used when both
	// files exist.
	CertPath, KeyPath string
}
