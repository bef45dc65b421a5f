// Package bmhtest runs a real Kubernetes control plane for the bmh fencing
// driver's tests: Debian's etcd and a kube-apiserver built from the Go module
// proxy (scripts/build-kube-apiserver.sh, cached per machine), both on
// 127.0.0.1 free ports, with a static admin token, service-account signing
// keys, RBAC, a Metal3 BareMetalHost CRD, a namespace and a fencing
// ServiceAccount bound to a narrow Role (get, list, watch, patch on
// baremetalhosts) whose token is minted with the TokenRequest API.
//
// It also plays the baremetal-operator (Operator: it writes
// status.poweredOn through the status subresource after a delay, as the
// real operator does once the BMC obeyed) and offers a TCP proxy that can
// delay every answer of the API server (SlowProxy).
//
// It owns only test infrastructure. It must never be imported by
// production code, never listen on anything but loopback, and always stop
// the processes it started, by PID.
package bmhtest
