package simbmc

import (
	"os"
	"testing"
)

func TestReadStatOfThisProcess(t *testing.T) {
	st, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != os.Getppid() {
		t.Errorf("ppid %d, want %d", st.ppid, os.Getppid())
	}
	if !alive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if alive(0) || alive(-1) {
		t.Error("pid 0 or -1 reported alive")
	}
}
