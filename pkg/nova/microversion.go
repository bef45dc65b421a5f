package nova

import (
	"fmt"
	"strconv"
	"strings"
)

// microversion is a compute API microversion "X.Y". The zero value means
// "not negotiated yet".
type microversion struct{ major, minor int }

// Microversions the client knows about.
var (
	mvMinimum          = microversion{2, 53} // service UUIDs, PUT /os-services/{id}
	mvCeiling          = microversion{2, 94} // 2.95 leaves evacuated servers stopped
	mvEmbeddedSpecs    = microversion{2, 47} // servers embed flavor extra_specs
	mvMigrationsPaging = microversion{2, 59} // os-migrations limit, changes-since, uuid
	mvFlavorSpecs      = microversion{2, 61} // flavors embed extra_specs
	mvLockedReason     = microversion{2, 73} // lock with a reason, locked_reason shown
)

// parseMicroversion reads "2.94" (a leading "v" is accepted). An empty
// string is an error.
func parseMicroversion(s string) (microversion, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	majS, minS, ok := strings.Cut(t, ".")
	if !ok {
		return microversion{}, fmt.Errorf("microversion %q: want MAJOR.MINOR", s)
	}
	a, err1 := strconv.Atoi(majS)
	b, err2 := strconv.Atoi(minS)
	if err1 != nil || err2 != nil || a < 0 || b < 0 {
		return microversion{}, fmt.Errorf("microversion %q: want MAJOR.MINOR", s)
	}
	return microversion{a, b}, nil
}

func (m microversion) String() string {
	if m.isZero() {
		return ""
	}
	return strconv.Itoa(m.major) + "." + strconv.Itoa(m.minor)
}

func (m microversion) isZero() bool { return m == microversion{} }

func (m microversion) less(o microversion) bool {
	if m.major != o.major {
		return m.major < o.major
	}
	return m.minor < o.minor
}

// atLeast reports whether m >= o.
func (m microversion) atLeast(o microversion) bool { return !m.less(o) }
