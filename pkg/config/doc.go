// Package config loads and validates the whole configuration of iha-leader:
// InstanceHA's four files (config.yaml, clouds.yaml, secure.yaml,
// fencing.yaml) read unchanged, its environment variables, and IHA's own keys
// in the same `config:` map.
//
// It owns:
//   - the key table (keys.go), the one place that names every config.yaml key
//     with its type, default, range and meaning; it drives parsing,
//     validation, `iha config check` and the generated reference
//     (ReferenceMarkdown, docs/config-reference.md);
//   - strict validation: unlike InstanceHA, which clamps out-of-range values
//     and silently falls back to defaults, every wrong value is an error, and
//     Load reports every problem of every file at once (*Problems);
//   - where each secret goes (secret.Secret, pkg/secret, is the type that
//     carries passwords and tokens and never prints them).
//
// It must never:
//   - put a password, token or secret into an error, a warning, a log record
//     or any printed or JSON form of Config (a canary test enforces this);
//   - return a partly applied Config: on any problem Load returns nil;
//   - contact a cloud, a BMC or Kubernetes: it checks files, not peers.
package config
