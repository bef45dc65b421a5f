// Package secret holds Secret, the type that carries passwords, tokens and
// keys (BMC passwords, the API tokens, a noauth token) from the
// configuration to the one call that needs the value.
//
// It is a package of its own, importing only the standard library, so that
// code which holds a secret without reading configuration (pkg/api and its
// clients, the fencing drivers) does not link the YAML and OpenStack
// parsers of pkg/config.
//
// It must never:
//   - print, marshal or log a value: every fmt verb, JSON, text marshalling,
//     slog and a panic show "[redacted]";
//   - import anything outside the standard library.
package secret
