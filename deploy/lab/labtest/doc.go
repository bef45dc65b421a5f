// Package labtest drives the real-Nova lab of deploy/lab end to end: up.sh,
// checks against the running Nova and its ipmi_sim BMCs, down.sh, and a
// proof that every process the lab recorded is gone afterwards.
//
// It owns no production code and must never be imported. Its tests are
// behind the build tag `lab` (they install Debian packages and take a
// minute or more): go test -tags lab ./deploy/lab/labtest/
package labtest
