package bmh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/ihaproject/iha/fence"
)

// The outcome table: 401/403 end at once (ErrAuth); 404 ends at once
// (ErrNotFound); 429, 5xx and network errors are retried until the host's
// timeout (ErrUnreachable); TLS verification failures end at once
// (ErrUnreachable: a certificate does not change in two seconds); any other
// refusal (400, 409, 422…) ends at once.

// classify picks the sentinel of an error that ended an operation, nil when
// none applies.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
		return fence.ErrAuth
	case apierrors.IsNotFound(err):
		return ErrNotFound
	case isTLSVerify(err) || isRetryable(err):
		return fence.ErrUnreachable
	}
	return nil
}

// isRetryable reports whether a request that failed with err may succeed if
// sent again.
func isRetryable(err error) bool {
	if err == nil || isContextError(err) || isTLSVerify(err) {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := int(status.Status().Code)
		return code == http.StatusTooManyRequests || code >= 500
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func isTLSVerify(err error) bool {
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknown) || errors.As(err, &hostErr) || errors.As(err, &invalid) || errors.As(err, &verify)
}

// isMissingKind tells a 404 for the resource type (the CRD is not
// installed: the Status names no object) from a 404 for the object.
func isMissingKind(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d == nil || d.Name == ""
}
