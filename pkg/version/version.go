// Package version holds the build's version, set by the linker
// (-X github.com/ihaproject/iha/pkg/version.Version=…, and …Revision=… for
// the commit) from git.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is the release, or "dev" for builds without -ldflags.
var Version = "dev"

// Revision is the VCS commit the build was made from, set by the linker
// (the Makefile and deploy/nfpm/build.sh do). Empty: Info falls back to
// what the Go toolchain stamped (vcs.revision), which builds with
// -buildvcs=false, or outside a checkout, do not have.
var Revision = ""

// Info is what a binary says about its build.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// Get returns this binary's build information.
func Get() Info {
	i := Info{Version: Version, Revision: Revision, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if i.Revision == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			modified := false
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					i.Revision = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if i.Revision != "" && modified {
				i.Revision += "-dirty"
			}
		}
	}
	return i
}

// String is the version with the VCS revision when the build has it.
func String() string {
	i := Get()
	if len(i.Revision) >= 12 {
		return i.Version + " (" + i.Revision[:12] + ")"
	}
	return i.Version
}
