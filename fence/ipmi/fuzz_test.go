package ipmi

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// FuzzNew feeds arbitrary fencing.yaml values to the validator: it must
// never panic, must accept only IP literals, ports in range and logins of
// the allowed alphabet, and must never echo the password.
func FuzzNew(f *testing.F) {
	f.Add("compute-0", "192.0.2.1", 623, "admin", "pw")
	f.Add("compute-1", "2001:db8::1", 65535, "root_1", "p")
	f.Add("", "bmc.example.com", 0, "ad min", "")
	f.Add("c", "fe80::1%eth0", 70000, strings.Repeat("a", 17), strings.Repeat("x", 21))
	f.Add("c", "::ffff:10.0.0.1", 1, "-", "pw\x00\n")
	f.Fuzz(func(t *testing.T, name, ip string, port int, login, pass string) {
		// What the other fields may show of themselves, raw or quoted (a
		// quoted "\x00" + "00" reads "\x0000", which holds "0000"): a
		// password found in there is not the password leaking.
		others := name + ip + login + strconv.Quote(name) + strconv.Quote(ip) + strconv.Quote(login)
		h := config.FenceHost{Name: name, Agent: "ipmi", IPAddr: ip, IPPort: port, Login: login,
			Passwd: secret.New(pass), Timeout: time.Second}
		fn, err := NewWithOptions(h, fence.Settings{}, nil)
		if err != nil {
			if len(pass) >= 4 && strings.Contains(err.Error(), pass) && !strings.Contains(others, pass) {
				t.Fatalf("error echoes the password: %v", err)
			}
			return
		}
		if fn.port < 1 || fn.port > 65535 || !loginRE.MatchString(login) || len(login) > maxUserLen || !fn.ip.IsValid() {
			t.Fatalf("accepted an invalid entry: %+v", h)
		}
		if pass == "" || len(pass) > maxPasswordLen {
			t.Fatalf("accepted password of %d bytes", len(pass))
		}
		if s := fn.String() + fn.Address(); len(pass) >= 4 && strings.Contains(s, pass) && !strings.Contains(others, pass) {
			t.Fatalf("String echoes the password: %s", s)
		}
	})
}
