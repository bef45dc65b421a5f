package config

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ihaproject/iha/pkg/heartbeat"
)

// Load reads the whole configuration from the paths InstanceHA uses
// (INSTANCEHA_CONFIG_PATH, CLOUDS_CONFIG_PATH, SECURE_CONFIG_PATH,
// FENCING_CONFIG_PATH, with their defaults) and the environment env.
//
// It returns either a complete, valid Config or nil and a *Problems listing
// every problem of every file; nothing is half-applied. Warnings go to
// Config.Warnings (or Problems.Warnings) and to logger. No secret is ever
// part of an error, a warning or a log record.
func Load(env Env, logger *slog.Logger) (*Config, error) {
	return load(Files{
		Config:   lookup(env, EnvConfigPath, DefaultConfigPath),
		Clouds:   lookup(env, EnvCloudsPath, DefaultCloudsPath),
		Secure:   lookup(env, EnvSecurePath, DefaultSecurePath),
		Fencing:  lookup(env, EnvFencingPath, DefaultFencingPath),
		Segments: lookup(env, EnvSegmentsPath, DefaultSegmentsPath),
	}, env, logger)
}

// LoadDir is Load with the four files taken from dir (config.yaml,
// clouds.yaml, secure.yaml, fencing.yaml); the path variables of env still
// win when they are set. `iha config check --dir` uses it.
func LoadDir(dir string, env Env, logger *slog.Logger) (*Config, error) {
	return load(Files{
		Config:   lookup(env, EnvConfigPath, filepath.Join(dir, "config.yaml")),
		Clouds:   lookup(env, EnvCloudsPath, filepath.Join(dir, "clouds.yaml")),
		Secure:   lookup(env, EnvSecurePath, filepath.Join(dir, "secure.yaml")),
		Fencing:  lookup(env, EnvFencingPath, filepath.Join(dir, "fencing.yaml")),
		Segments: lookup(env, EnvSegmentsPath, filepath.Join(dir, "segments.yaml")),
	}, env, logger)
}

// hostname is os.Hostname; a variable so that tests can vary it.
var hostname = os.Hostname

func load(files Files, env Env, logger *slog.Logger) (*Config, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if env == nil {
		env = MapEnv(nil)
	}
	c := &collector{}

	// 1. config.yaml: missing means every default, as in InstanceHA.
	def := Defaults()
	if h, err := hostname(); err == nil {
		def.NodeName = ShortName(h)
	}
	settings, seen := def, map[string]int{}
	data, err := os.ReadFile(files.Config)
	switch {
	case err == nil:
		if data == nil {
			data = []byte{}
		}
		settings, seen = parseSettingsEnv(files.Config, data, def, env, c)
	case os.IsNotExist(err):
		c.warn(files.Config + ": does not exist: every setting has its default")
		settings, seen = parseSettingsEnv(files.Config, nil, def, env, c)
	default:
		readFile(files.Config, true, "", c)
	}
	if settings.NodeName == "" {
		c.add(Problem{File: files.Config, Key: "NODE_NAME", Reason: "is not set and the host name is unknown"})
	}
	resolveKeyFiles(files.Config, seen, &settings, c)

	// 2. Environment.
	if v, _ := env(EnvDisabled); v == "True" {
		settings.Disabled = true
	}
	udpPort := envPort(env, EnvUDPPort, DefaultUDPPort, c)
	// UDP_PORT (InstanceHA's way to move the kdump port) applies unless
	// KDUMP_LISTEN names another address.
	if settings.KdumpListen == Defaults().KdumpListen {
		settings.KdumpListen = ":" + strconv.Itoa(udpPort)
	}
	hbPort := envPort(env, EnvHeartbeatPort, DefaultHeartbeatPort, c)
	if settings.HeartbeatListen == Defaults().HeartbeatListen {
		settings.HeartbeatListen = ":" + strconv.Itoa(hbPort)
	}
	hbKeys := []string{lookup(env, EnvHeartbeatKey, ""), lookup(env, EnvHeartbeatKeyPrevious, "")}
	if settings.CheckHeartbeat {
		checkHeartbeatKeys(hbKeys, settings.HeartbeatListen, files.Config, c)
	}
	cloudName := lookup(env, EnvCloud, DefaultCloud)

	// 3. clouds.yaml + secure.yaml.
	cloud := loadCloud(files.Clouds, files.Secure, cloudName, c)

	// 4. fencing.yaml.
	var fencing Fencing
	if data, ok := readFile(files.Fencing, true, "without it no host can be fenced, so none is evacuated", c); ok {
		fencing = parseFencing(files.Fencing, data, c)
	}

	// 5. segments.yaml: optional.
	settings.Segments = loadSegments(files.Segments, c)

	// 6. Files that hold a secret must not be readable by every user.
	checkSecretModes(files, settings, c)

	problems, warnings := c.finish()
	for _, w := range warnings {
		logger.Warn(w, "phase", "config")
	}
	if len(problems) > 0 {
		return nil, &Problems{Items: problems, Warnings: warnings}
	}
	return &Config{
		Settings:          settings,
		Cloud:             cloud,
		Fencing:           fencing,
		UDPPort:           udpPort,
		HeartbeatKeyFiles: hbKeys,
		Files:             files,
		Warnings:          warnings,
	}, nil
}

// checkHeartbeatKeys: with CHECK_HEARTBEAT the listener must be on and at
// least one HMAC key must load (InstanceHA silently rejects every heartbeat
// when none does: the setting would do nothing).
func checkHeartbeatKeys(files []string, listen, configFile string, c *collector) {
	if listen == Off {
		c.add(Problem{File: configFile, Key: "HEARTBEAT_LISTEN", Value: strconv.Quote(Off),
			Reason: "is off while CHECK_HEARTBEAT is true: no heartbeat could arrive", Allowed: "host:port"})
	}
	keys, err := heartbeat.LoadKeys(files...)
	if err != nil {
		c.add(Problem{File: "environment", Key: EnvHeartbeatKey, Reason: err.Error(), Allowed: "a file holding a hex key"})
		return
	}
	if len(keys) == 0 {
		c.add(Problem{File: "environment", Key: EnvHeartbeatKey,
			Reason:  "names no file holding a key, and CHECK_HEARTBEAT is true: every heartbeat would be rejected",
			Allowed: "the path of the heartbeat HMAC key (hex), as InstanceHA's operator mounts it, or CHECK_HEARTBEAT false"})
	}
}

// envPort is the UDP port an environment variable sets (InstanceHA's
// UDP_PORT, HEARTBEAT_PORT), def when it is unset; a bad value is a
// problem naming the variable, and def is returned.
func envPort(env Env, key string, def int, c *collector) int {
	v, ok := env(key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	switch {
	case err != nil:
		c.add(Problem{File: "environment", Key: key, Value: strconv.Quote(v), Reason: "is not an integer", Allowed: "1–65535"})
	case n < 1 || n > 65535:
		c.add(Problem{File: "environment", Key: key, Value: strconv.Quote(v), Reason: "is out of range", Allowed: "1–65535"})
	default:
		return n
	}
	return def
}
