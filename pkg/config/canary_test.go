package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// canary is planted wherever a credential can be written; it must never
// come out of the package in any form.
const canary = "CANARY-Zq7wX-do-not-print"

func TestCanaryPasswordNeverLeaks(t *testing.T) {
	goodClouds := `clouds:
  overcloud:
    auth:
      auth_url: https://keystone.example.com:5000/v3
      username: admin
      password: ` + canary + `
      project_name: admin
    region_name: regionOne
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example.com:5000/v3
      application_credential_id: ac1
      application_credential_secret: ` + canary + `
    region_name: regionOne
  lab:
    auth_type: noauth
    auth:
      endpoint: http://127.0.0.1:8774/v2.1
      token: ` + canary + `
    region_name: RegionOne
`
	goodSecure := "clouds:\n  overcloud:\n    auth:\n      password: " + canary + "\n"
	goodFencing := `FencingConfig:
  compute-0:
    agent: ipmi
    ipaddr: 127.0.0.1
    ipport: 623
    login: admin
    passwd: ` + canary + `
  compute-1:
    agent: redfish
    ipaddr: 127.0.0.1
    login: root
    passwd: "` + canary + `"
  compute-2:
    agent: bmh
    token: ` + canary + `
    host: compute-2
    namespace: openstack
`
	badFencing := `FencingConfig:
  compute-0:
    agent: ipmi
    ipaddr: 127.0.0.1
    ipport: 99999
    login: admin
    passwd: [` + canary + `]
  compute-1: ` + canary + `
  compute-2:
    agent: redfish
    address: redfish://root:` + canary + `@127.0.0.1
    login: root
    passwd: {nested: ` + canary + `}
  compute-3:
    agent: ` + canary + `
    passwd: ` + canary + `
  compute-4:
    agent: bmh
    token: ` + canary + `
    host: ` + canary + `
    namespace: ns
  compute-5:
    agent: redfish
    ipaddr: 127.0.0.1
    login: root
    passwd: ` + canary + `
    pasword: ` + canary + `
    api_url: https://u:` + canary + `@example.com
`
	badSecure := "clouds:\n  overcloud:\n    auth:\n      password: [" + canary + "]\n      application_credential_secret: {a: " + canary + "}\n"
	badClouds := strings.Replace(goodClouds, "    region_name: regionOne\n", "    verify: "+canary+"\n", 1)
	badClouds = strings.Replace(badClouds, "auth_url: https://keystone.example.com:5000/v3", "auth_url: https://admin:"+canary+"@keystone:5000/v3", 1)

	tests := []struct {
		name    string
		files   map[string]string
		env     map[string]string
		wantErr bool
	}{
		{"valid, password auth", map[string]string{"clouds.yaml": goodClouds, "secure.yaml": goodSecure, "fencing.yaml": goodFencing}, nil, false},
		{"valid, application credential", map[string]string{"clouds.yaml": goodClouds, "secure.yaml": goodSecure, "fencing.yaml": goodFencing}, map[string]string{"OS_CLOUD": "appcred"}, false},
		{"valid, noauth", map[string]string{"clouds.yaml": goodClouds, "secure.yaml": goodSecure, "fencing.yaml": goodFencing}, map[string]string{"OS_CLOUD": "lab"}, false},
		{"malformed entries", map[string]string{"clouds.yaml": badClouds, "secure.yaml": badSecure, "fencing.yaml": badFencing}, nil, true},
		{"malformed entries, appcred", map[string]string{"clouds.yaml": badClouds, "secure.yaml": badSecure, "fencing.yaml": badFencing}, map[string]string{"OS_CLOUD": "appcred"}, true},
		{"unknown cloud", map[string]string{"clouds.yaml": goodClouds, "secure.yaml": goodSecure, "fencing.yaml": goodFencing}, map[string]string{"OS_CLOUD": "nope"}, true},
		{"broken YAML around secrets", map[string]string{
			"clouds.yaml":  goodClouds + "    password: \"" + canary + "\n",
			"secure.yaml":  "clouds:\n  overcloud:\n    auth:\n      password: '" + canary + "\n",
			"fencing.yaml": "FencingConfig:\n  c:\n    passwd: " + canary + "\n   agent: [" + canary + "\n",
		}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			textLog := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg, err := LoadDir(fixture(t, tt.files), MapEnv(tt.env), textLog)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, want error %v", err, tt.wantErr)
			}
			var outputs []string
			if err != nil {
				p := err.(*Problems)
				outputs = append(outputs, err.Error(), fmt.Sprintf("%v|%+v|%#v", err, p, p))
				outputs = append(outputs, p.Warnings...)
				if tt.name == "malformed entries" && len(p.Items) < 8 {
					t.Errorf("only %d problems:\n%v", len(p.Items), err)
				}
				t.Logf("problems:\n%v", err)
			} else {
				var js bytes.Buffer
				jsonLog := slog.New(slog.NewJSONHandler(&js, nil))
				jsonLog.Info("loaded", "config", cfg)
				textLog.Info("loaded", "config", cfg, "cloud", cfg.Cloud, "fencing", cfg.Fencing)
				b, jerr := json.Marshal(cfg)
				if jerr != nil {
					t.Fatalf("JSON of Config: %v", jerr)
				}
				outputs = append(outputs, string(b), js.String(),
					fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
					fmt.Sprintf("%v %+v %#v %s", *cfg, *cfg, *cfg, cfg.Cloud))
				outputs = append(outputs, cfg.Warnings...)
				// The secret is there for those who must use it.
				found := cfg.Cloud.AuthOptions().Password == canary || cfg.Cloud.AuthOptions().ApplicationCredentialSecret == canary ||
					(cfg.Cloud.NoAuth != nil && cfg.Cloud.NoAuth.Token.Reveal() == canary)
				if h, _ := cfg.Fencing.Lookup("compute-0"); !found || h.Passwd.Reveal() != canary {
					t.Error("the canary did not reach the Config where it belongs")
				}
			}
			outputs = append(outputs, logs.String())
			for _, o := range outputs {
				if strings.Contains(o, canary) || strings.Contains(o, canary[:7]) {
					t.Errorf("canary leaked in:\n%s", o)
				}
			}
		})
	}
}
