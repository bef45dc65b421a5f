// Package bmh is the Metal3 BareMetalHost fencing driver (fencing.yaml agent
// bmh): it powers a host off and on by editing its BareMetalHost object
// through the Kubernetes API (client-go's dynamic client), and the
// baremetal-operator does the BMC work.
//
// It owns that conversation: merge-patch spec.online=false plus the
// annotation reboot.metal3.io/iha = {"mode": "hard"} (Metal3 keeps a host off
// while any reboot.metal3.io/* annotation is present, and "hard" means an
// immediate hard power-off), then wait until status.poweredOn reads false;
// power on removes the annotation and sets spec.online=true; power state
// reads status.poweredOn. It needs only get, list, watch and patch on
// baremetalhosts in one namespace.
//
// It must never decide whether to fence, never report a host off before the
// operator has written status.poweredOn=false, never read or need the BMC
// credentials Secret, and never put the bearer token in a log line, an error
// or anything a panic could print.
package bmh
