package config

import "os"

// Env looks up an environment variable, as os.LookupEnv does. Tests pass a
// map (MapEnv) so that they never read or change the process environment.
type Env func(key string) (string, bool)

// OSEnv is the process environment.
func OSEnv() Env { return os.LookupEnv }

// MapEnv is an environment made of m.
func MapEnv(m map[string]string) Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// Environment variables and their defaults (InstanceHA's).
const (
	EnvConfigPath   = "INSTANCEHA_CONFIG_PATH"
	EnvCloudsPath   = "CLOUDS_CONFIG_PATH"
	EnvSecurePath   = "SECURE_CONFIG_PATH"
	EnvFencingPath  = "FENCING_CONFIG_PATH"
	EnvSegmentsPath = "SEGMENTS_CONFIG_PATH"
	EnvCloud        = "OS_CLOUD"
	EnvUDPPort      = "UDP_PORT"
	EnvDisabled     = "INSTANCEHA_DISABLED"
	// InstanceHA's heartbeat (CHECK_HEARTBEAT).
	EnvHeartbeatPort        = "HEARTBEAT_PORT"
	EnvHeartbeatKey         = "HEARTBEAT_HMAC_KEY_PATH"
	EnvHeartbeatKeyPrevious = "HEARTBEAT_HMAC_KEY_PREVIOUS_PATH"

	DefaultConfigPath    = "/var/lib/instanceha/config.yaml"
	DefaultCloudsPath    = "/home/cloud-admin/.config/openstack/clouds.yaml"
	DefaultSecurePath    = "/home/cloud-admin/.config/openstack/secure.yaml"
	DefaultFencingPath   = "/secrets/fencing.yaml"
	DefaultSegmentsPath  = "/secrets/segments.yaml"
	DefaultCloud         = "overcloud"
	DefaultUDPPort       = 7410
	DefaultHeartbeatPort = 7411
)

// envVar describes one environment variable for the reference.
type envVar struct {
	Name, Default, Meaning string
}

var envVars = []envVar{
	{EnvConfigPath, DefaultConfigPath, "path of config.yaml"},
	{EnvCloudsPath, DefaultCloudsPath, "path of clouds.yaml"},
	{EnvSecurePath, DefaultSecurePath, "path of secure.yaml (passwords; merged over clouds.yaml)"},
	{EnvFencingPath, DefaultFencingPath, "path of fencing.yaml"},
	{EnvSegmentsPath, DefaultSegmentsPath, "path of segments.yaml, the failover segments (missing: no segments)"},
	{EnvCloud, DefaultCloud, "entry of clouds.yaml to use"},
	{EnvUDPPort, "7410", "kdump UDP listener port, 1–65535 (unlike InstanceHA, a bad value is an error)"},
	{EnvDisabled, "unset", "exactly `True` forces DISABLED=true; any other value leaves the file's DISABLED"},
	{EnvHeartbeatPort, "7411", "heartbeat UDP listener port (CHECK_HEARTBEAT), 1–65535 (unlike InstanceHA, a bad value is an error)"},
	{EnvHeartbeatKey, "unset", "file holding the heartbeat HMAC key in hex (CHECK_HEARTBEAT needs it or the previous one); re-read when it changes"},
	{EnvHeartbeatKeyPrevious, "unset", "file holding the previous HMAC key in hex, accepted too during a key rotation (empty or missing: none)"},
}

func lookup(env Env, key, def string) string {
	if env == nil {
		return def
	}
	if v, ok := env(key); ok && v != "" {
		return v
	}
	return def
}
