package bmhtest

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// Operator plays Metal3's baremetal-operator for one namespace: a host
// should be on when spec.online is true and no reboot.metal3.io annotation
// is present, else off; when status.poweredOn differs from that for Delay,
// the operator writes the new status.poweredOn through the status
// subresource (the real operator does so once the BMC obeyed).
type Operator struct {
	c      *Cluster
	ns     string
	delay  time.Duration
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	held    map[string]bool // hosts whose BMC never obeys
	pending map[string]pendingChange
	patches int
}

type pendingChange struct {
	want  bool
	since time.Time
}

// StartOperator starts the operator for namespace ns; Stop ends it.
func (c *Cluster) StartOperator(ns string, delay time.Duration) *Operator {
	ctx, cancel := context.WithCancel(context.Background())
	op := &Operator{c: c, ns: ns, delay: delay, cancel: cancel, done: make(chan struct{}),
		held: map[string]bool{}, pending: map[string]pendingChange{}}
	go op.run(ctx)
	return op
}

// Hold makes the operator ignore host name (a BMC that never obeys) until
// Hold(name, false).
func (op *Operator) Hold(name string, held bool) {
	op.mu.Lock()
	op.held[name] = held
	op.mu.Unlock()
}

// Patches counts the status changes the operator made.
func (op *Operator) Patches() int {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.patches
}

// Stop ends the operator and waits for it.
func (op *Operator) Stop() {
	op.cancel()
	<-op.done
}

func (op *Operator) run(ctx context.Context) {
	defer close(op.done)
	res := op.c.Admin.Resource(BMHResource).Namespace(op.ns)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		list, err := res.List(ctx, metav1.ListOptions{})
		if err == nil {
			for i := range list.Items {
				op.reconcile(ctx, &list.Items[i])
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (op *Operator) reconcile(ctx context.Context, h *unstructured.Unstructured) {
	name := h.GetName()
	cur, ok, _ := unstructured.NestedBool(h.Object, "status", "poweredOn")
	if !ok {
		return // not inspected yet: the test sets the first status
	}
	online, _, _ := unstructured.NestedBool(h.Object, "spec", "online")
	want := online
	for k := range h.GetAnnotations() {
		if strings.HasPrefix(k, "reboot.metal3.io") {
			want = false
		}
	}
	op.mu.Lock()
	if want == cur || op.held[name] {
		delete(op.pending, name)
		op.mu.Unlock()
		return
	}
	p, seen := op.pending[name]
	if !seen || p.want != want {
		op.pending[name] = pendingChange{want: want, since: time.Now()}
		op.mu.Unlock()
		return
	}
	if time.Since(p.since) < op.delay {
		op.mu.Unlock()
		return
	}
	delete(op.pending, name)
	op.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"status": map[string]any{"poweredOn": want}})
	_, err := op.c.Admin.Resource(BMHResource).Namespace(op.ns).Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}, "status")
	if err == nil {
		op.mu.Lock()
		op.patches++
		op.mu.Unlock()
	}
}
