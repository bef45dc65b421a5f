package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// SettingsRecord is the configuration in force as the decision log keeps
// it: every key of the table by name, with its exact value (durations as Go
// durations, so that a sub-second POLL of a test survives), and the
// failover segments of the segments file. Secrets (API_TOKEN,
// API_READ_TOKEN) and ignored keys are never part of it.
type SettingsRecord struct {
	Keys     map[string]json.RawMessage `json:"keys"`
	Segments []Segment                  `json:"segments,omitempty"`
}

// Record returns the record of s.
func (s Settings) Record() SettingsRecord {
	r := SettingsRecord{Keys: map[string]json.RawMessage{}, Segments: s.Segments.Items}
	for i := range keyTable {
		k := &keyTable[i]
		var v any
		switch {
		case k.secp != nil, k.Kind == kindIgnored:
			continue
		case k.intp != nil:
			v = *k.intp(&s)
		case k.durp != nil:
			v = k.durp(&s).String()
		case k.boolp != nil:
			v = *k.boolp(&s)
		case k.strp != nil:
			v = *k.strp(&s)
		case k.listp != nil:
			l := *k.listp(&s)
			if l == nil {
				l = []string{}
			}
			v = l
		default:
			continue
		}
		b, _ := json.Marshal(v)
		r.Keys[k.Name] = b
	}
	return r
}

// Settings rebuilds the settings of a record over Defaults(). A key the
// record lacks (a log written by an older build) keeps its default; a key
// this build does not know is an error, as is a value of the wrong type:
// the record then does not describe what this build would run with.
func (r SettingsRecord) Settings() (Settings, error) {
	s := Defaults()
	names := make([]string, 0, len(r.Keys))
	for n := range r.Keys {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		raw := r.Keys[name]
		k := keyIndex[name]
		if k == nil {
			return Settings{}, fmt.Errorf("configuration record: unknown key %s", name)
		}
		var err error
		switch {
		case k.secp != nil, k.Kind == kindIgnored:
			err = fmt.Errorf("is not recorded")
		case k.intp != nil:
			err = json.Unmarshal(raw, k.intp(&s))
		case k.durp != nil:
			var d string
			if err = json.Unmarshal(raw, &d); err == nil {
				*k.durp(&s), err = time.ParseDuration(d)
			}
		case k.boolp != nil:
			err = json.Unmarshal(raw, k.boolp(&s))
		case k.strp != nil:
			err = json.Unmarshal(raw, k.strp(&s))
		case k.listp != nil:
			if err = json.Unmarshal(raw, k.listp(&s)); err == nil && len(*k.listp(&s)) == 0 {
				*k.listp(&s) = nil
			}
		}
		if err != nil {
			return Settings{}, fmt.Errorf("configuration record: %s: %w", name, err)
		}
	}
	s.Segments = Segments{Items: r.Segments}
	return s, nil
}

// LoadSettingsDir reads only dir/config.yaml (and dir/segments.yaml when it
// exists) as iha-leader reads them, with env's IHA_<KEY> overrides: what
// the decision rules read, without the credentials of clouds.yaml,
// secure.yaml and fencing.yaml (`iha replay --config`). Every problem is
// returned at once, each naming its file and key.
func LoadSettingsDir(dir string, env Env, logger *slog.Logger) (Settings, []string, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &collector{}
	def := Defaults()
	if h, err := hostname(); err == nil {
		def.NodeName = ShortName(h)
	}
	file := filepath.Join(dir, "config.yaml")
	var settings Settings
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		if data == nil {
			data = []byte{}
		}
		settings, _ = parseSettingsEnv(file, data, def, env, c)
	case os.IsNotExist(err):
		c.add(Problem{File: file, Reason: "does not exist"})
	default:
		readFile(file, true, "", c)
	}
	seg := filepath.Join(dir, "segments.yaml")
	if _, err := os.Stat(seg); err == nil {
		settings.Segments = loadSegments(seg, c)
	}
	problems, warnings := c.finish()
	for _, w := range warnings {
		logger.Warn(w, "phase", "config")
	}
	if len(problems) > 0 {
		return Settings{}, warnings, &Problems{Items: problems, Warnings: warnings}
	}
	return settings, warnings, nil
}

// Override returns s with the keys of kv (KEY → value as config.yaml
// writes it) set, each parsed and range-checked exactly as in config.yaml,
// then the keys checked against each other (`iha replay --set`). An
// unknown key, a secret, or a bad value is an error naming the key and
// what is allowed; nothing is half-applied.
func (s Settings) Override(kv map[string]string) (Settings, error) {
	const from = "--set"
	c := &collector{}
	seen := map[string]int{}
	names := make([]string, 0, len(kv))
	for n := range kv {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		k := keyIndex[strings.ToUpper(name)]
		switch {
		case k == nil:
			c.add(Problem{File: from, Key: name, Reason: "is not a configuration key (docs/config-reference.md lists them)"})
			continue
		case k.secp != nil, k.Kind == kindIgnored:
			c.add(Problem{File: from, Key: k.Name, Reason: "is not a decision rule's key (secrets and ignored keys are never recorded nor replayed)"})
			continue
		}
		k.apply(from, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kv[name]}, &s, c)
		seen[k.Name] = 0
	}
	crossCheck(from, seen, &s, c)
	if problems, warnings := c.finish(); len(problems) > 0 {
		return Settings{}, &Problems{Items: problems, Warnings: warnings}
	}
	return s, nil
}
