package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/ihaproject/iha/internal/testkit"
)

func TestCloudPasswordAuthMergesSecureYAML(t *testing.T) {
	cfg := mustLoad(t, fixture(t, nil), nil)
	c := cfg.Cloud
	if c.Name != "overcloud" || c.AuthURL != "https://keystone.example.com:5000/v3" || c.RegionName != "regionOne" || c.Interface != "internal" {
		t.Errorf("cloud = %s interface %s", c, c.Interface)
	}
	ao := c.AuthOptions()
	if ao.Password != "secure-pass-1" || ao.Username != "admin" || ao.IdentityEndpoint != c.AuthURL || ao.DomainName != "Default" {
		t.Errorf("AuthOptions: user %q endpoint %q domain %q password set %v", ao.Username, ao.IdentityEndpoint, ao.DomainName, ao.Password != "")
	}
	if ao.Scope == nil || ao.Scope.ProjectName != "admin" || ao.Scope.DomainName != "Default" {
		t.Errorf("scope = %+v", ao.Scope)
	}
	if c.Endpoint.Region != "regionOne" || c.Endpoint.Availability != gophercloud.AvailabilityInternal {
		t.Errorf("EndpointOpts = %+v", c.Endpoint)
	}
	if c.TLS == nil || c.TLS.InsecureSkipVerify {
		t.Errorf("TLS = %+v, want verification on", c.TLS)
	}
	if c.NoAuth != nil {
		t.Error("NoAuth set for a password cloud")
	}
}

func TestCloudFiles(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeTestCA(t, ca) // gophercloud parses it
	tests := []struct {
		name     string
		clouds   string // "-" removes the file
		secure   string
		env      map[string]string
		problem  string
		check    func(t *testing.T, c Cloud)
		warnings bool
	}{
		{
			name: "missing clouds.yaml", clouds: "-",
			problem: "clouds.yaml: does not exist (clouds.yaml is required",
		},
		{
			name: "unknown OS_CLOUD lists the clouds", env: map[string]string{"OS_CLOUD": "undercloud"},
			problem: `clouds.yaml: OS_CLOUD: "undercloud" is not a cloud of this file (clouds: other, overcloud)`,
		},
		{
			name: "OS_CLOUD picks another cloud", env: map[string]string{"OS_CLOUD": "other"},
			secure: "clouds:\n  other:\n    auth:\n      password: other-pass-9\n",
			check: func(t *testing.T, c Cloud) {
				if c.RegionName != "regionTwo" || c.AuthOptions().Password != "other-pass-9" || c.Interface != "public" {
					t.Errorf("cloud %s interface %s", c, c.Interface)
				}
			},
		},
		{
			name:    "missing region",
			clouds:  strings.Replace(baseClouds, "    region_name: regionOne\n", "", 1),
			problem: "clouds.yaml: overcloud: region_name: is missing",
		},
		{
			name: "missing secure.yaml and no password", secure: "-",
			problem: "overcloud: auth.password: is missing",
		},
		{
			name:   "password in clouds.yaml, no secure.yaml",
			clouds: strings.Replace(baseClouds, "      username: admin\n", "      username: admin\n      password: clouds-pass-3\n", 1), secure: "-",
			check: func(t *testing.T, c Cloud) {
				if c.AuthOptions().Password != "clouds-pass-3" {
					t.Error("password from clouds.yaml not used")
				}
			},
		},
		{
			name:   "secure.yaml wins over clouds.yaml",
			clouds: strings.Replace(baseClouds, "      username: admin\n", "      username: admin\n      password: clouds-pass-3\n", 1),
			check: func(t *testing.T, c Cloud) {
				if c.AuthOptions().Password != "secure-pass-1" {
					t.Error("secure.yaml's password did not win")
				}
			},
		},
		{
			name: "application credentials",
			clouds: `clouds:
  overcloud:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example.com:5000/v3
      application_credential_id: ac-id-1
    region_name: regionOne
`,
			secure: "clouds:\n  overcloud:\n    auth:\n      application_credential_secret: ac-secret-1\n",
			check: func(t *testing.T, c Cloud) {
				ao := c.AuthOptions()
				if ao.ApplicationCredentialID != "ac-id-1" || ao.ApplicationCredentialSecret != "ac-secret-1" || ao.Password != "" {
					t.Errorf("app cred id %q, secret set %v", ao.ApplicationCredentialID, ao.ApplicationCredentialSecret != "")
				}
			},
		},
		{
			name: "application credentials without secret",
			clouds: `clouds:
  overcloud:
    auth_type: v3applicationcredential
    auth: {auth_url: "https://k:5000/v3", application_credential_id: ac-id-1}
    region_name: regionOne
`,
			secure:  "-",
			problem: "overcloud: auth.application_credential_secret: is missing",
		},
		{
			name: "noauth",
			clouds: `clouds:
  overcloud:
    auth_type: noauth
    auth:
      endpoint: http://127.0.0.1:8774/v2.1
      image_endpoint: http://127.0.0.1:9292
    region_name: RegionOne
`,
			secure: "clouds:\n  overcloud:\n    auth:\n      token: admin:admin\n",
			check: func(t *testing.T, c Cloud) {
				if c.NoAuth == nil {
					t.Fatal("NoAuth not set")
				}
				if c.NoAuth.ComputeURL != "http://127.0.0.1:8774/v2.1" || c.NoAuth.ImageURL != "http://127.0.0.1:9292" || c.NoAuth.Token.Reveal() != "admin:admin" {
					t.Errorf("NoAuth = %+v", *c.NoAuth)
				}
				if c.AuthURL != c.NoAuth.ComputeURL {
					t.Errorf("AuthURL = %q", c.AuthURL)
				}
			},
		},
		{
			name:    "noauth without endpoint",
			clouds:  "clouds:\n  overcloud:\n    auth_type: noauth\n    auth: {token: admin:admin}\n    region_name: r\n",
			problem: "overcloud: auth.endpoint: is missing",
		},
		{
			name:    "noauth with a bad endpoint",
			clouds:  "clouds:\n  overcloud:\n    auth_type: noauth\n    auth: {token: admin:admin, endpoint: 'ftp://x'}\n    region_name: r\n",
			problem: `overcloud: auth.endpoint: "ftp://x" is not an http or https URL`,
		},
		{
			name:    "unknown auth type",
			clouds:  strings.Replace(baseClouds, "    region_name: regionOne\n", "    region_name: regionOne\n    auth_type: kerberos\n", 1),
			problem: `overcloud: auth_type: "kerberos" is not supported (allowed password, v3password, v3applicationcredential, token, v3token, noauth)`,
		},
		{
			name:    "bad interface",
			clouds:  strings.Replace(baseClouds, "interface: internal", "interface: private", 1),
			problem: `overcloud: interface: "private" is not an endpoint interface`,
		},
		{
			name:   "cacert and verify false",
			clouds: strings.Replace(baseClouds, "    interface: internal\n", "    interface: internal\n    cacert: "+ca+"\n    verify: false\n", 1),
			check: func(t *testing.T, c Cloud) {
				if c.TLS == nil || c.TLS.RootCAs == nil || !c.TLS.InsecureSkipVerify {
					t.Errorf("TLS = %+v", c.TLS)
				}
			},
		},
		{
			name:    "unreadable cacert",
			clouds:  strings.Replace(baseClouds, "    interface: internal\n", "    interface: internal\n    cacert: "+ca+".missing\n", 1),
			problem: `overcloud: cacert: "` + ca + `.missing" does not exist`,
		},
		{
			name:    "verify as a string",
			clouds:  strings.Replace(baseClouds, "    interface: internal\n", "    interface: internal\n    verify: \"no\"\n", 1),
			problem: "overcloud: verify: is not a YAML boolean",
		},
		{
			name:    "password is a list",
			secure:  "clouds:\n  overcloud:\n    auth:\n      password: [a-secret-list-item]\n",
			problem: "overcloud: auth.password: must be a single value",
		},
		{
			name:    "malformed clouds.yaml",
			clouds:  "clouds:\n  overcloud:\n    region_name: r\n\tauth: {}\n",
			problem: "clouds.yaml:3: malformed YAML: found a tab character", // yaml.v3 names the line before the tab
		},
		{
			name:    "malformed secure.yaml",
			secure:  "clouds:\n\tovercloud: {}\n",
			problem: "secure.yaml:2: malformed YAML",
		},
		{
			name:    "clouds is not a map",
			clouds:  "clouds: [a]\n",
			problem: "clouds.yaml:1: clouds: is not a map",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			if tt.clouds != "" {
				files["clouds.yaml"] = tt.clouds
			}
			if tt.secure != "" {
				files["secure.yaml"] = tt.secure
			}
			cfg, p, _ := loadDir(t, fixture(t, files), tt.env)
			if tt.problem != "" {
				if p == nil {
					t.Fatalf("loaded, want problem %q", tt.problem)
				}
				assertContainsAll(t, p.Error(), tt.problem)
				return
			}
			if p != nil {
				t.Fatal(p)
			}
			tt.check(t, cfg.Cloud)
		})
	}
}

// writeTestCA writes a freshly made self-signed CA certificate to path.
func writeTestCA(t *testing.T, path string) { testkit.WriteCA(t, path, "iha-test-ca") }
