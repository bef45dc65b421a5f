package bmhtest

import (
	"os/exec"
	"sync"
)

// doneMap holds the channel closed when each spawned process has exited.
type doneMap struct {
	mu sync.Mutex
	m  map[*exec.Cmd]chan struct{}
}

func newDoneMap() *doneMap { return &doneMap{m: map[*exec.Cmd]chan struct{}{}} }

func (d *doneMap) set(cmd *exec.Cmd, ch chan struct{}) {
	d.mu.Lock()
	d.m[cmd] = ch
	d.mu.Unlock()
}

func (d *doneMap) peek(cmd *exec.Cmd) chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[cmd]
}

// take returns the channel and forgets the process.
func (d *doneMap) take(cmd *exec.Cmd) chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := d.m[cmd]
	delete(d.m, cmd)
	return ch
}
