// Package version holds the build's version, set by the linker
// (-X github.com/ihaproject/iha/pkg/version.Version=…) from git.
package version

import "runtime/debug"

// Version is the release, or "dev" for builds without -ldflags.
var Version = "dev"

// String is the version with the VCS revision when the build has it.
func String() string {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}
