package config

import (
	"net/netip"
	"strings"
	"testing"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/ and are replayed by
// every `go test`; `go test -fuzz=FuzzX ./pkg/config` explores further.

func FuzzParseSettings(f *testing.F) {
	f.Add([]byte("config:\n  DELTA: 30\n  LOGLEVEL: info\n  SKIP_SERVERS_WITH_NAME: a,b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &collector{}
		s := parseSettings("config.yaml", data, Defaults(), c)
		problems, _ := c.finish()
		for _, p := range problems {
			if p.String() == "" {
				t.Fatal("empty problem")
			}
		}
		if len(problems) > 0 {
			return
		}
		// Whatever was accepted is within the table's ranges.
		for i := range keyTable {
			k := &keyTable[i]
			switch k.Kind {
			case kindInt:
				var v int
				if k.durp != nil {
					v = int(*k.durp(&s) / 1e9)
				} else {
					v = *k.intp(&s)
				}
				if k.Name == "GOSSIP_SUSPICION_MULT" && v == 0 {
					continue // unset: the profile's
				}
				if v < k.Min || v > k.Max {
					t.Fatalf("%s = %d accepted outside %d–%d", k.Name, v, k.Min, k.Max)
				}
			case kindEnum:
				if !contains(k.Enum, *k.strp(&s)) {
					t.Fatalf("%s = %q accepted", k.Name, *k.strp(&s))
				}
			case kindAddr:
				if k.Name == "GOSSIP_ADVERTISE" && *k.strp(&s) == "" {
					continue // optional: the bound address
				}
				if r := checkHostPort(*k.strp(&s), advertisedKey(k.Name)); r != "" {
					t.Fatalf("%s = %q accepted: %s", k.Name, *k.strp(&s), r)
				}
			}
		}
	})
}

func FuzzParseFencing(f *testing.F) {
	f.Add([]byte("FencingConfig:\n  c0: {agent: ipmi, ipaddr: 127.0.0.1, ipport: 623, login: a, passwd: secret-pw-1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &collector{}
		fen := parseFencing("fencing.yaml", data, c)
		problems, warnings := c.finish()
		for _, s := range c.secrets {
			for _, p := range problems {
				if strings.Contains(p.String(), s) {
					t.Fatalf("secret in problem %q", p.String())
				}
			}
			for _, w := range warnings {
				if strings.Contains(w, s) {
					t.Fatalf("secret in warning %q", w)
				}
			}
		}
		if len(problems) > 0 {
			return
		}
		for _, h := range fen.Hosts {
			if !contains(fenceAgents, h.Agent) {
				t.Fatalf("agent %q accepted", h.Agent)
			}
			if h.Agent == AgentIPMI || h.Agent == AgentRedfish {
				if _, err := netip.ParseAddr(h.IPAddr); err != nil {
					t.Fatalf("ipaddr %q accepted", h.IPAddr)
				}
				if h.IPPort < 1 || h.IPPort > 65535 || !loginRE.MatchString(h.Login) || h.Passwd.IsZero() {
					t.Fatalf("host %+v accepted", h)
				}
			}
			if h.Agent == AgentBMH && (h.Token.IsZero() || !dnsLabelRE.MatchString(h.Namespace)) {
				t.Fatalf("bmh host %+v accepted", h)
			}
		}
	})
}

func FuzzParseBMCAddress(f *testing.F) {
	f.Add("redfish+https://[fd00::1]:8443/redfish/v1/Systems/1")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseBMCAddress(s)
		if err != nil {
			if strings.Contains(s, "@") && len(s) > 12 && strings.Contains(err.Error(), s) {
				t.Fatalf("error quotes the address: %v", err)
			}
			return
		}
		ip, perr := netip.ParseAddr(a.Host)
		if perr != nil || ip.Zone() != "" || a.Port < 1 || a.Port > 65535 {
			t.Fatalf("accepted %q as %+v", s, a)
		}
		if a.Agent != AgentIPMI && a.Agent != AgentRedfish {
			t.Fatalf("agent %q", a.Agent)
		}
		if strings.ContainsAny(a.SystemID, "/?#") {
			t.Fatalf("system id %q", a.SystemID)
		}
		again, err := ParseBMCAddress(a.String())
		if err != nil || again != a {
			t.Fatalf("round trip %q → %q: %+v, %v", s, a.String(), again, err)
		}
	})
}
