package redfish

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/stmcginnis/gofish/schemas"

	"github.com/ihaproject/iha/fence"
)

// The outcome table of InstanceHA's Redfish agent (R9.4), as predicates:
// 401/403 end at once (ErrAuth); 500/502/503/504, timeouts and connection
// errors are retried (ErrUnreachable once attempts run out); TLS
// verification failures are not retried (the certificate will not change
// in two seconds); anything else ends at once.

// stepError names the request that failed.
type stepError struct {
	what string
	err  error
}

func (e *stepError) Error() string { return e.what + ": " + describe(e.err) }
func (e *stepError) Unwrap() error { return e.err }

func step(what string, err error) error {
	if err == nil {
		return nil
	}
	return &stepError{what: what, err: err}
}

// describe prints a gofish error as "HTTP 503: message" rather than its
// raw body.
func describe(err error) string {
	var re *schemas.Error
	if errors.As(err, &re) && re.HTTPReturnedStatusCode != 0 {
		msg := re.Message
		if msg == "" {
			msg = re.Code
		}
		if msg == "" {
			msg = http.StatusText(re.HTTPReturnedStatusCode)
		}
		return "HTTP " + strconv.Itoa(re.HTTPReturnedStatusCode) + ": " + msg
	}
	return err.Error()
}

// firstFailure turns gofish's CollectionError, which neither unwraps nor
// keeps status codes visible, into its first failure (by link, for a stable
// message), so that a 401 on a collection is still an auth error.
func firstFailure(err error) error {
	var ce *schemas.CollectionError
	if !errors.As(err, &ce) || len(ce.Failures) == 0 {
		return err
	}
	links := make([]string, 0, len(ce.Failures))
	for l := range ce.Failures {
		links = append(links, l)
	}
	sort.Strings(links)
	return ce.Failures[links[0]]
}

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

type retryableError struct{ error }

func (e retryableError) Unwrap() error { return e.error }

// permanent marks err as not worth retrying.
func permanent(err error) error { return permanentError{err} }

// retryable marks err as worth retrying.
func retryable(err error) error { return retryableError{err} }

func statusOf(err error) int {
	var re *schemas.Error
	if errors.As(err, &re) {
		return re.HTTPReturnedStatusCode
	}
	return 0
}

func isAuth(err error) bool {
	code := statusOf(err)
	return code == http.StatusUnauthorized || code == http.StatusForbidden
}

func isTLSVerify(err error) bool {
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknown) || errors.As(err, &hostErr) || errors.As(err, &invalid) || errors.As(err, &verify)
}

func isRetryable(err error) bool {
	if err == nil {
		return false
	}
	var p permanentError
	if errors.As(err, &p) {
		return false
	}
	var r retryableError
	if errors.As(err, &r) {
		return true
	}
	if isTLSVerify(err) {
		return false
	}
	var re *schemas.Error
	if errors.As(err, &re) {
		switch re.HTTPReturnedStatusCode {
		case 0, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

// classify picks the fence sentinel for an error that ended an operation.
func classify(err error) error {
	switch {
	case isAuth(err):
		return fence.ErrAuth
	case isTLSVerify(err):
		return fence.ErrUnreachable
	case isRetryable(err):
		return fence.ErrUnreachable
	}
	return nil
}
