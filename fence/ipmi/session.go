package ipmi

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ihaproject/iha/pkg/secret"
)

// closeTimeout bounds the Close Session exchange at the end of a call. The
// socket is released whatever the BMC answers.
const closeTimeout = 500 * time.Millisecond

// ipmiSession is one authenticated RMCP+ session of go-ipmi.
type ipmiSession struct{ c *client.Client }

// dialIPMI opens a lanplus session at administrator privilege with the
// configured cipher suite. On failure the socket is closed at once, without
// waiting for the BMC: there is no session to end.
func (f *Fencer) dialIPMI(ctx context.Context) (session, error) {
	c, err := client.NewClient(f.hostArg(), f.port, f.user, f.pass.Reveal())
	if err != nil {
		return nil, err
	}
	c.WithInterface(client.InterfaceLanplus).WithCipherSuiteID(f.cipher).
		WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	if err := c.Connect(ctx); err != nil {
		// Release the socket in the background: go-ipmi's Close takes a
		// lock that an abandoned read may hold for up to its 1 s read
		// timeout. A cancelled context makes Close skip the Close Session
		// exchange: there is no session to end.
		go func() {
			dead, cancel := context.WithCancel(context.Background())
			cancel()
			_ = c.Close(dead)
		}()
		return nil, err
	}
	return &ipmiSession{c: c}, nil
}

func (s *ipmiSession) PowerIsOn(ctx context.Context) (bool, error) {
	st, err := s.c.GetChassisStatus(ctx)
	if err != nil {
		return false, err
	}
	return st.PowerIsOn, nil
}

func (s *ipmiSession) PowerDown(ctx context.Context) error {
	_, err := s.c.ChassisControl(ctx, chassis.ChassisControlPowerDown)
	return err
}

func (s *ipmiSession) PowerUp(ctx context.Context) error {
	_, err := s.c.ChassisControl(ctx, chassis.ChassisControlPowerUp)
	return err
}

func (s *ipmiSession) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = s.c.Close(ctx)
}

// authMarkers are go-ipmi's texts for a BMC that refuses the user, the
// password or the privilege. go-ipmi flattens the errors of its session
// setup into one message (errors.Join under %v), so the chain is lost and
// the text is all there is.
var authMarkers = []string{
	"rakp2 authentication code mismatch",         // wrong password
	"rakp4 integrity check value does not match", // wrong password, other side
	"rakp authentication failed",                 // client.ErrRAKPAuthentication
	"unauthorized name",                          // RMCP+ status 0x0d: unknown user
	"unauthorized role",                          // 0x0a: user lacks the privilege asked for
	"invalid role",                               // 0x09
	"invalid integrity check value",              // 0x0f
	"insufficient privilege",                     // completion code 0xd4
}

// isAuth reports whether err means the BMC refused our credentials or
// privilege, which no retry can fix.
func isAuth(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, client.ErrRAKPAuthentication) {
		return true
	}
	var rs *types.RmcpStatusError
	if errors.As(err, &rs) {
		switch rs.StatusCode() {
		case types.RmcpStatusCodeUnauthorizedName, types.RmcpStatusCodeInvalidRole,
			types.RmcpStatusCodeUnauthorizedRoleOfPriLevel, types.RmcpStatusCodeInvalidIntegrityCheckValue:
			return true
		}
	}
	if re, ok := types.IsResponseError(err); ok && re.CompletionCode() == types.CodeInsufficientPrivilege {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, m := range authMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// scrub returns err's text on one line, with the password replaced should
// a library ever echo it. The result is a plain string: wrapping err itself
// would let errors.Unwrap reach the unscrubbed text.
func scrub(err error, pass secret.Secret) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	if p := pass.Reveal(); p != "" {
		msg = strings.ReplaceAll(msg, p, "[redacted]")
	}
	msg = strings.Join(strings.Fields(msg), " ")
	const maxLen = 600
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "…"
	}
	return msg
}
