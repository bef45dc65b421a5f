// Package scenarios runs IHA itself against the real-Nova lab (deploy/lab):
// a real iha-leader process, configured from InstanceHA-style files the
// test writes into the lab's state directory, fencing the lab's computes
// through their ipmi_sim BMCs and evacuating servers through real Nova 26.
//
// It owns the end-to-end scenarios of issue 8 (power loss, a leader killed
// mid-evacuation, the host coming back, the threshold, and the novasim
// contract suite against the same Nova). The tests carry the build tag
// `lab` and run from `make lab-test`. It must never touch a process it did
// not start (everything is stopped by PID), never use an address outside
// 127.0.0.0/8, and never decide recovery itself: it only causes failures
// and checks what IHA and Nova did.
package scenarios
