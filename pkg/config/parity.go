package config

// Parity says, for every InstanceHA key, what IHA does with it: honoured as
// InstanceHA does, honoured differently (and how), or without effect (and
// what does its job instead). It is a column of the reference; a test keeps
// it complete. Out-of-range and malformed values are errors for every key
// (InstanceHA clamps them or falls back to the default).
var instanceHAParity = map[string]string{
	"EVACUABLE_TAG": "honoured: images (tags and properties), flavors (the first extra-spec key carrying it, in Nova's order), " +
		"aggregates; a server whose image Glance's list does not show is looked up by id",
	"DELTA": "honoured for hosts without an agent (and in DETECTION_MODE nova); a host with an agent is judged by the mesh " +
		"and one missed Nova report, not DELTA",
	"POLL": "honoured differently: Nova is polled every POLL, but a mesh verdict, a kdump notice or a deadline wakes the " +
		"leader at once; back-off after Nova failures as InstanceHA",
	"THRESHOLD":                      "honoured (strict >), and, with the mesh, also counts the hosts the mesh is losing",
	"WORKERS":                        "honoured: hosts recovered at once",
	"DELAY":                          "honoured",
	"LOGLEVEL":                       "honoured (WARNING and CRITICAL map to warn and error)",
	"SMART_EVACUATION":               "honoured differently: one migration query per host per interval, and an evacuation without a migration yet is in progress for EVACUATION_GRACE (InstanceHA re-issues it: W16)",
	"ORCHESTRATED_RESTART":           "honoured",
	"RESERVED_HOSTS":                 "honoured; a spare is claimed through Raft, so two recoveries never take the same one",
	"FORCE_RESERVED_HOST_EVACUATION": "honoured",
	"TAGGED_IMAGES":                  "honoured",
	"TAGGED_FLAVORS":                 "honoured",
	"TAGGED_AGGREGATES":              "honoured",
	"LEAVE_DISABLED":                 "honoured",
	"FORCE_ENABLE":                   "honoured; also skips the wait for the evacuations before powering the host back on",
	"CHECK_KDUMP": "honoured differently: the agents hear fence_kdump and relay it over the encrypted mesh, and the leader " +
		"listens itself (KDUMP_LISTEN, with or without a mesh); a notice counts only from the named host's address " +
		"(its agent's, kdump_hosts, reverse DNS) through an authenticated channel (event KdumpNoticeRejected otherwise); " +
		"no extra POLL: the wait ends at its deadline",
	"KDUMP_TIMEOUT": "honoured, counted from the verdict; the leader wakes at the deadline",
	"CHECK_HEARTBEAT": "honoured differently: the same HBV2 packets and keys, but a witness only where InstanceHA's rule " +
		"judges (hosts without an agent, DETECTION_MODE nova, the mesh partition guard; a host with an agent is judged by " +
		"the mesh); each controller forwards what it accepts to the others; key files are re-read when they change; a " +
		"replayed packet is refused; no usable key is a configuration error (InstanceHA silently rejects every packet)",
	"HEARTBEAT_TIMEOUT": "honoured (freshness and grace period)",
	"HEARTBEAT_CLIFF_THRESHOLD": "honoured differently: counted from the heartbeats themselves, not from the hosts in " +
		"recovery, so it fires when the heartbeats stop together (InstanceHA's W2: it did not)",
	"HEARTBEAT_CLIFF_MAX_CYCLES": "honoured, in POLL intervals",
	"DISABLED":                   "honoured; `iha pause` does the same at run time",
	"SSL_VERIFY":                 "honoured (Redfish)",
	"SSL_CA_BUNDLE":              "honoured (Redfish); a file that exists but cannot be used is an error",
	"SSL_CERT_PATH":              "honoured (Redfish)",
	"SSL_KEY_PATH":               "honoured (Redfish)",
	"FENCING_TIMEOUT":            "honoured",
	"HASH_INTERVAL": "no effect: IHA has no liveness hash; `/healthz` answers while the process serves and never fails " +
		"because recovery work is slow (InstanceHA's liveness probe killed in-flight evacuations: W4)",
	"METRICS_LOG_INTERVAL":   "honoured: the leader logs a `metrics summary` line (the same figures are on /metrics)",
	"SKIP_SERVERS_WITH_NAME": "honoured",
	"EVACUATION_MAX_THREADS": "honoured",
	"EVACUATION_RETRIES":     "honoured, in traditional mode too (then the host is marked FAILED; InstanceHA retries forever: W7)",
	"EVACUATION_STAGGER":     "honoured",
	"EVACUATION_TIMEOUT": "honoured; a resumed evacuation counts from its migration's created_at; after a leader change, " +
		"from the new term at the earliest",
	"MAX_HOSTS_PER_CYCLE": "honoured",
	"K8S_API_CHECK_INTERVAL": "no effect: IHA's decisions never depend on reaching the Kubernetes API (on Kubernetes too, where " +
		"the iha-leader pods form their Raft group directly). Its job, keeping a controller cut off from the cluster " +
		"from fencing, is Raft's: a controller without a quorum does not lead",
	"WATCHDOG_TIMEOUT": "no effect (unused by InstanceHA too)",
}
