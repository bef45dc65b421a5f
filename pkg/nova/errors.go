package nova

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gophercloud/gophercloud/v2"
)

// Errors of this package that are not HTTP statuses, matched with errors.Is
// on an *APIError.
var (
	// ErrUnsupported: the Nova offers no microversion this client can use
	// (below 2.53, or a minimum above the cap).
	ErrUnsupported = errors.New("unsupported Nova API version")
	// ErrMalformed: Nova or Glance answered success with a body that is not
	// the JSON document expected.
	ErrMalformed = errors.New("malformed response")
)

// maxMessage bounds the length of a message taken from an error body.
const maxMessage = 512

// cleanError carries the scrubbed text of a transport error. It answers
// errors.Is for its cause (context.DeadlineExceeded, …) but does not unwrap
// to it, so no caller can print the unscrubbed text by accident.
type cleanError struct {
	msg   string
	cause error
}

func (e *cleanError) Error() string        { return e.msg }
func (e *cleanError) Is(target error) bool { return errors.Is(e.cause, target) }

// Format prints the scrubbed message whatever the verb: %#v must not reach
// the cause.
func (e *cleanError) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, e.msg) }

// wrapErr turns anything gophercloud returns into an *APIError.
func (c *Client) wrapErr(op string, err error) *APIError {
	if err == nil {
		return nil
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var unable *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &unable) {
		// Nova said 401 and Keystone would not give a new token: report
		// Keystone's answer, which says why (down, or credentials refused).
		inner := unable.ErrReauth
		if inner == nil {
			inner = unable.ErrOriginal
		}
		e := c.wrapErr(op, inner)
		if e.StatusCode != 0 {
			e.Message = "re-authentication failed: " + e.Message
		} else {
			e.Err = &cleanError{msg: "re-authentication failed: " + e.Err.Error(), cause: inner}
		}
		return e
	}
	var ure gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ure) {
		return c.httpErr(op, ure.Actual, ure.ResponseHeader, ure.Body)
	}
	var urep *gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &urep) && urep != nil {
		return c.httpErr(op, urep.Actual, urep.ResponseHeader, urep.Body)
	}
	return &APIError{Op: op, Err: &cleanError{msg: c.scrub(err.Error()), cause: err}}
}

// httpErr builds the error of an HTTP answer with an unexpected status.
func (c *Client) httpErr(op string, status int, h http.Header, body []byte) *APIError {
	return &APIError{
		Op:         op,
		StatusCode: status,
		RequestID:  requestID(h),
		Message:    c.scrub(errorMessage(status, body)),
	}
}

func (c *Client) scrub(s string) string { return scrub(s, c.secrets) }

// requestID reads the request id Nova, Glance or Keystone put on an answer.
func requestID(h http.Header) string {
	if h == nil {
		return ""
	}
	if id := h.Get("X-Openstack-Request-Id"); id != "" {
		return id
	}
	return h.Get("X-Compute-Request-Id")
}

var (
	reTags   = regexp.MustCompile(`<[^>]*>`)
	reBlanks = regexp.MustCompile(`\s+`)
)

// errorMessage extracts the human message of an OpenStack error body:
// Nova's {"badRequest": {"message": …}}, Keystone's {"error": {"message": …}},
// {"message": …}, placement-style {"errors": [{"detail": …}]}, or the text
// of a plain or HTML body. It never fails; an empty body gives the status
// text. The result is not yet scrubbed.
func errorMessage(status int, body []byte) string {
	msg := jsonMessage(body)
	if msg == "" {
		msg = reTags.ReplaceAllString(string(body), " ")
	}
	msg = strings.TrimSpace(reBlanks.ReplaceAllString(msg, " "))
	if !utf8.ValidString(msg) {
		msg = strings.ToValidUTF8(msg, "?")
	}
	if len(msg) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	if msg == "" {
		msg = http.StatusText(status)
		if msg == "" {
			msg = "no message"
		}
	}
	return msg
}

func jsonMessage(body []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return ""
	}
	if m := rawToString(top["message"]); m != "" && !strings.HasPrefix(m, "{") {
		return m
	}
	if raw, ok := top["errors"]; ok {
		var list []struct{ Title, Detail string }
		if json.Unmarshal(raw, &list) == nil && len(list) > 0 {
			if list[0].Detail != "" {
				return list[0].Detail
			}
			return list[0].Title
		}
	}
	// {"badRequest": {...}}, {"error": {...}}: the first object with a message.
	// Sorted for a deterministic choice; Nova and Keystone send one key.
	for _, k := range slices.Sorted(maps.Keys(top)) {
		var inner map[string]json.RawMessage
		if json.Unmarshal(top[k], &inner) != nil {
			continue
		}
		if m := rawToString(inner["message"]); m != "" {
			return m
		}
	}
	return ""
}
