package nova

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The wire types below decode Nova's and Glance's JSON leniently: a field of
// an unexpected shape becomes its zero value instead of failing a whole
// listing, because one odd server must not hide the others from the leader.

// timeLayouts are tried in order. Layouts without a zone parse as UTC,
// which is what Nova means (its DB columns are naive UTC).
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
}

// parseTime reads a Nova or Glance timestamp. Empty, "None", null and
// unparsable values give the zero time.
func parseTime(s string) time.Time {
	s = strings.TrimSpace(s)
	switch s {
	case "", "None", "null":
		return time.Time{}
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// wireTime is a timestamp that never fails to decode.
type wireTime time.Time

func (t *wireTime) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) == 0 || b[0] != '"' {
		*t = wireTime{}
		return nil
	}
	*t = wireTime(parseTime(rawToString(b)))
	return nil
}

func (t wireTime) time() time.Time { return time.Time(t) }

// wireString accepts a JSON string, number or bool (as its text); null and
// anything else give "".
type wireString string

func (s *wireString) UnmarshalJSON(b []byte) error {
	*s = wireString(rawToString(b))
	return nil
}

// wireInt accepts a JSON number or a numeric string; anything else gives 0.
type wireInt int

func (n *wireInt) UnmarshalJSON(b []byte) error {
	*n = 0
	s := rawToString(b)
	if i, err := strconv.Atoi(s); err == nil {
		*n = wireInt(i)
	}
	return nil
}

// wireBool accepts true/false and their string forms ("True", "false").
type wireBool bool

func (v *wireBool) UnmarshalJSON(b []byte) error {
	s := strings.ToLower(rawToString(b))
	*v = wireBool(s == "true")
	return nil
}

// wireMap is a string map that tolerates non-string values (kept as their
// JSON text) and non-object input (nil map).
type wireMap map[string]string

func (m *wireMap) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil || raw == nil {
		*m = nil
		return nil //nolint:nilerr // lenient by design: an odd map becomes empty, not a failed listing
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		out[k] = rawToString(v)
	}
	*m = out
	return nil
}

// wireStrings is a list of strings that tolerates a non-list (nil) and
// non-string elements (dropped).
type wireStrings []string

func (l *wireStrings) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		*l = nil
		return nil //nolint:nilerr // lenient by design: an odd list becomes empty, not a failed listing
	}
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out = append(out, s)
		}
	}
	*l = out
	return nil
}

// rawToString renders a JSON scalar as text: strings unquoted, numbers and
// booleans as written, null as "", objects and arrays as their JSON.
func rawToString(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return ""
	}
	if b[0] == '"' {
		// Fast path: most values have no escapes.
		if n := len(b); n >= 2 && b[n-1] == '"' && bytes.IndexByte(b[1:n-1], '\\') < 0 && bytes.IndexByte(b[1:n-1], '"') < 0 && utf8.Valid(b[1:n-1]) {
			return string(b[1 : n-1])
		}
		var s string
		if json.Unmarshal(b, &s) == nil {
			return s
		}
		return ""
	}
	return string(b)
}

// link is one entry of a *_links list.
type link struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

// nextHref returns the href of the rel="next" link, or "".
func nextHref(links []link) string {
	for _, l := range links {
		if l.Rel == "next" {
			return l.Href
		}
	}
	return ""
}
