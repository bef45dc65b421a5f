package leader

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// novaWatch is the reconciler's Nova with one more duty: it notes whether
// Nova answers at all. A request that ended without an answer (its
// NOVA_API_TIMEOUT ran out, or the connection failed) marks Nova silent
// until the next request that gets an answer (any HTTP status: an answer
// is an answer). Readiness reads it: a hung API (chaos scenario 4's paused
// nova-api) made the recovery's own calls time out while the next poll,
// due only POLL later, waited in the API's queue and then succeeded, so
// counting failed polls alone never made a leader unready.
type novaWatch struct {
	Nova
	now    func() time.Time
	silent atomic.Int64 // unix nanos of the first unanswered request since the last answer; 0: answering
}

// unanswered reports whether err says Nova gave no answer (not a refusal,
// not the caller giving up).
func unanswered(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

func (w *novaWatch) note(err error) {
	switch {
	case errors.Is(err, context.Canceled):
		// the caller gave up: says nothing of Nova
	case unanswered(err):
		w.silent.CompareAndSwap(0, w.now().UnixNano())
	default:
		w.silent.Store(0) // an answer, whatever its status
	}
}

// silentSince is when Nova stopped answering (zero: it answers).
func (w *novaWatch) silentSince() time.Time {
	if n := w.silent.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (w *novaWatch) ListServices(ctx context.Context, binary string) ([]nova.Service, error) {
	v, err := w.Nova.ListServices(ctx, binary)
	w.note(err)
	return v, err
}
func (w *novaWatch) ListServicesOnHost(ctx context.Context, host, binary string) ([]nova.Service, error) {
	v, err := w.Nova.ListServicesOnHost(ctx, host, binary)
	w.note(err)
	return v, err
}
func (w *novaWatch) UpdateService(ctx context.Context, id string, u nova.ServiceUpdate) (nova.Service, error) {
	v, err := w.Nova.UpdateService(ctx, id, u)
	w.note(err)
	return v, err
}
func (w *novaWatch) ListServers(ctx context.Context, host string) ([]nova.Server, error) {
	v, err := w.Nova.ListServers(ctx, host)
	w.note(err)
	return v, err
}
func (w *novaWatch) GetServer(ctx context.Context, id string) (nova.Server, error) {
	v, err := w.Nova.GetServer(ctx, id)
	w.note(err)
	return v, err
}
func (w *novaWatch) Evacuate(ctx context.Context, id, targetHost string) error {
	err := w.Nova.Evacuate(ctx, id, targetHost)
	w.note(err)
	return err
}
func (w *novaWatch) Lock(ctx context.Context, id, reason string) error {
	err := w.Nova.Lock(ctx, id, reason)
	w.note(err)
	return err
}
func (w *novaWatch) Unlock(ctx context.Context, id string) error {
	err := w.Nova.Unlock(ctx, id)
	w.note(err)
	return err
}
func (w *novaWatch) ResetState(ctx context.Context, id, state string) error {
	err := w.Nova.ResetState(ctx, id, state)
	w.note(err)
	return err
}
func (w *novaWatch) Stop(ctx context.Context, id string) error {
	err := w.Nova.Stop(ctx, id)
	w.note(err)
	return err
}
func (w *novaWatch) ListMigrations(ctx context.Context, q nova.MigrationQuery) ([]nova.Migration, error) {
	v, err := w.Nova.ListMigrations(ctx, q)
	w.note(err)
	return v, err
}
func (w *novaWatch) ListAggregates(ctx context.Context) ([]nova.Aggregate, error) {
	v, err := w.Nova.ListAggregates(ctx)
	w.note(err)
	return v, err
}
func (w *novaWatch) ListFlavors(ctx context.Context) ([]nova.Flavor, error) {
	v, err := w.Nova.ListFlavors(ctx)
	w.note(err)
	return v, err
}
func (w *novaWatch) ListImages(ctx context.Context) ([]nova.Image, error) {
	v, err := w.Nova.ListImages(ctx)
	w.note(err)
	return v, err
}
func (w *novaWatch) GetImage(ctx context.Context, id string) (nova.Image, error) {
	v, err := w.Nova.GetImage(ctx, id)
	w.note(err)
	return v, err
}
