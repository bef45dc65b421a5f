package novasim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Time layouts as Nova and Glance print them.
const (
	// novaDBTime is how Nova prints DATETIME columns (os-services,
	// os-migrations, aggregates): no zone, microseconds always zero because
	// the database keeps whole seconds.
	novaDBTime = "2006-01-02T15:04:05.000000"
	// isoZ is the servers API's created/updated and Glance's timestamps.
	isoZ = "2006-01-02T15:04:05Z"
)

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("novasim: crypto/rand: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// newHex returns n random bytes hex-encoded (tokens, project ids).
func newHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("novasim: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// isUUIDLike accepts what oslo's is_uuid_like accepts in practice: 32 hex
// digits with or without the four dashes.
func isUUIDLike(s string) bool {
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// trunc drops everything below whole seconds, as Nova's DATETIME columns
// do, and returns UTC. (Cheaper than Truncate on the list's hot path.)
func trunc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.Unix(t.Unix(), 0).UTC()
}

// writeJSON writes v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "novasim: encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// novaErrorKey is the top-level key Nova's fault wrapper uses per status.
func novaErrorKey(status int) string {
	switch status {
	case 400:
		return "badRequest"
	case 401:
		return "unauthorized"
	case 403:
		return "forbidden"
	case 404:
		return "itemNotFound"
	case 405:
		return "badMethod"
	case 406:
		return "notAcceptable"
	case 409:
		return "conflictingRequest"
	case 413:
		return "overLimit"
	case 415:
		return "badMediaType"
	case 429:
		return "overLimit"
	case 501:
		return "notImplemented"
	case 503:
		return "serviceUnavailable"
	}
	return "computeFault"
}

// novaError writes a Nova-style error body {"badRequest": {"code": 400, "message": …}}.
func novaError(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	writeJSON(w, status, map[string]any{novaErrorKey(status): map[string]any{"code": status, "message": msg}})
}

// keystoneError writes the body Keystone and keystonemiddleware use.
func keystoneError(w http.ResponseWriter, status int, title, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": status, "title": title, "message": msg}})
}

// glanceError writes Glance's (webob) error shape.
func glanceError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "%d %s\n\n%s\n\n   ", status, http.StatusText(status), msg)
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// parseBool parses oslo's strict bool strings as JSON values may carry them.
func parseBoolValue(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		switch strings.ToLower(x) {
		case "1", "t", "true", "on", "y", "yes":
			return true, true
		case "0", "f", "false", "off", "n", "no":
			return false, true
		}
	}
	return false, false
}

// copyMap returns a copy of m (nil stays nil... as an empty map, so JSON shows {}).
func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
