package bmhtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// KubeAPIServer returns the path of a kube-apiserver binary: the
// environment variable IHA_KUBE_APISERVER, else the per-machine cache
// (IHA_KUBE_CACHE, default /var/tmp/iha-kube) filled by
// scripts/build-kube-apiserver.sh, which is run when the binary is missing
// (minutes on a cold machine; the script serialises concurrent builds).
func KubeAPIServer(logf func(string, ...any)) (string, error) {
	if p := os.Getenv("IHA_KUBE_APISERVER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("IHA_KUBE_APISERVER: %w", err)
		}
		return p, nil
	}
	cache := os.Getenv("IHA_KUBE_CACHE")
	if cache == "" {
		cache = "/var/tmp/iha-kube"
	}
	bin := filepath.Join(cache, "kube-apiserver-"+KubeVersion)
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	buildOnce.Do(func() { buildErr = build(bin, logf) })
	if buildErr != nil {
		return "", buildErr
	}
	return bin, nil
}

var (
	buildOnce sync.Once
	buildErr  error
)

func build(bin string, logf func(string, ...any)) error {
	script, err := findScript()
	if err != nil {
		return err
	}
	logf("bmhtest: %s missing; building it with %s (several minutes on a cold machine, once per machine)", bin, script)
	start := time.Now()
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "KUBE_VERSION="+KubeVersion, "IHA_KUBE_CACHE="+filepath.Dir(bin))
	out, err := cmd.CombinedOutput()
	if err != nil {
		s := strings.TrimSpace(string(out))
		if len(s) > 4000 {
			s = "…" + s[len(s)-4000:]
		}
		return fmt.Errorf("build kube-apiserver: %w\n%s", err, s)
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("build kube-apiserver: the script succeeded but %s is missing", bin)
	}
	logf("bmhtest: built %s in %v", bin, time.Since(start).Round(time.Second))
	return nil
}

// findScript walks up from the working directory (a package directory
// under go test) to the repository's scripts/build-kube-apiserver.sh.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "build-kube-apiserver.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/build-kube-apiserver.sh not found above the working directory; set IHA_KUBE_APISERVER")
		}
		dir = parent
	}
}
