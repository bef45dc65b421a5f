// Package pkgtest builds IHA's packages and proves them, as issue 7's "Done
// when" asks: it runs deploy/nfpm/build.sh (nfpm through the Go proxy),
// checks the RPMs with Debian's rpm tools and systemd-analyze
// (scripts/package-check.sh), shows that the check can fail, and boots the
// installed iha-leader with the packaged sample configuration against
// novasim.
//
// It owns no production code: only tests. It must never install anything
// into the real root (every install goes to a t.TempDir() root with
// --noscripts), contact anything beyond 127.0.0.1, or leave a process
// running (each is stopped by its PID in t.Cleanup).
//
// It needs rpm and systemd-analyze (scripts/install-test-deps.sh installs
// them; `make test` runs that first) and fails, not skips, without them.
package pkgtest
