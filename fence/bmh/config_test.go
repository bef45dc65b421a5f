package bmh_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/bmh"
	"github.com/ihaproject/iha/fence/bmh/bmhtest"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

func TestBadEntriesAreRefusedAtLoadTimeNamingTheKey(t *testing.T) {
	dir := t.TempDir()
	ca, err := bmhtest.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not-pem.crt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "config-canary-token-55aa"
	good := config.FenceHost{Name: "compute-0", Agent: "bmh", Host: "compute-0", Namespace: "metal3",
		Token: secret.New(token), APIURL: "https://127.0.0.1:6443", CAFile: ca}
	for _, tt := range []struct {
		name string
		edit func(*config.FenceHost)
		want string
	}{
		{"missing token", func(h *config.FenceHost) { h.Token = secret.Secret{} }, "token is required"},
		{"missing host", func(h *config.FenceHost) { h.Host = "" }, "host (the BareMetalHost name) is required"},
		{"host not a DNS subdomain", func(h *config.FenceHost) { h.Host = "Compute_0" }, "host \"Compute_0\" is not a BareMetalHost name"},
		{"host too long", func(h *config.FenceHost) { h.Host = strings.Repeat("a", 254) }, "is not a BareMetalHost name"},
		{"missing namespace", func(h *config.FenceHost) { h.Namespace = "" }, "namespace is required"},
		{"namespace not a DNS label", func(h *config.FenceHost) { h.Namespace = "metal3.io" }, "namespace \"metal3.io\" is not a namespace"},
		{"namespace too long", func(h *config.FenceHost) { h.Namespace = strings.Repeat("a", 64) }, "is not a namespace"},
		{"api_url not http", func(h *config.FenceHost) { h.APIURL = "ftp://127.0.0.1" }, "api_url is not an http(s) URL"},
		{"api_url with user info", func(h *config.FenceHost) { h.APIURL = "https://user:" + token + "@127.0.0.1" }, "api_url is not an http(s) URL without user info"},
		{"unreadable ca_file", func(h *config.FenceHost) { h.CAFile = filepath.Join(dir, "missing.crt") }, "ca_file: open"},
		{"ca_file without PEM", func(h *config.FenceHost) { h.CAFile = notPEM }, "holds no PEM certificate"},
		{"empty name", func(h *config.FenceHost) { h.Name = "" }, "empty host name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := good
			tt.edit(&h)
			logger, logs := fencetest.Logger(t)
			f, err := bmh.New(h, fence.Settings{}, logger)
			if err == nil {
				t.Fatalf("New accepted the entry: %v", f)
			}
			var fe *fence.Error
			if !errors.As(err, &fe) || fe.Op != fence.OpConfig || fe.Driver != "bmh" || fe.Host != h.Name {
				t.Fatalf("error %v is not a configure *fence.Error for %q", err, h.Name)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
			fencetest.CheckNoSecret(t, []string{token}, err.Error(), fmt.Sprintf("%+v %#v", err, err), logs())
		})
	}
	t.Run("a good entry is accepted without contacting the API server", func(t *testing.T) {
		f, err := bmh.New(good, fence.Settings{}, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if f.Driver() != "bmh" {
			t.Fatalf("Driver() = %q", f.Driver())
		}
		a, ok := f.(fence.Addresser)
		if !ok || a.Address() != "bmh metal3/compute-0 at https://127.0.0.1:6443" {
			t.Fatalf("Address() = %v", f)
		}
		fencetest.CheckNoSecret(t, []string{token}, fmt.Sprintf("%v %+v %#v %s", f, f, f, f))
	})
	t.Run("the in-cluster defaults apply", func(t *testing.T) {
		h := good
		h.APIURL, h.CAFile = "", ""
		f, err := bmh.New(h, fence.Settings{}, nil)
		if _, statErr := os.Stat(config.DefaultBMHCAFile); statErr != nil {
			// Outside a pod the service-account CA does not exist: the error
			// names it (InstanceHA requires it too).
			if err == nil || !strings.Contains(err.Error(), config.DefaultBMHCAFile) {
				t.Fatalf("New without ca_file outside a pod = %v, want an error naming %s", err, config.DefaultBMHCAFile)
			}
			return
		}
		if err != nil || !strings.Contains(f.(fence.Addresser).Address(), config.DefaultBMHAPIURL) {
			t.Fatalf("New with defaults = %v, %v", f, err)
		}
	})
	t.Run("plain HTTP is accepted with a warning", func(t *testing.T) {
		h := good
		h.APIURL, h.CAFile = "http://127.0.0.1:8080", ""
		logger, logs := fencetest.Logger(t)
		if _, err := bmh.New(h, fence.Settings{}, logger); err != nil {
			t.Fatalf("New: %v", err)
		}
		if !strings.Contains(logs(), "plain HTTP") {
			t.Fatalf("no warning about plain HTTP in %q", logs())
		}
		fencetest.CheckNoSecret(t, []string{token}, logs())
	})
}
