package leader

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// rebuildingTaskStates are task states of a server being evacuated.
var rebuildingTaskStates = map[string]bool{"rebuilding": true, "rebuild_block_device_mapping": true, "rebuild_spawning": true}

// migrationSkew tolerates clock differences between us and Nova when
// matching a migration to an intent.
const migrationSkew = 2 * time.Minute

// evacuateStep evacuates every planned server that is not finished, in the
// configured mode, then moves the record on: evacuated when all are done,
// failed when any gave up, otherwise it waits for the next cycle.
//
// Both modes issue the evacuate calls with bounded concurrency
// (max(1, EVACUATION_MAX_THREADS/WORKERS) at once, EVACUATION_STAGGER
// apart). Traditional mode stops there (accepted is success, as upstream);
// smart and orchestrated modes then track the whole phase with one
// os-migrations query per interval (upstream makes one per server), and
// orchestrated mode runs its priority phases one after the other.
func (r *Reconciler) evacuateStep(ctx context.Context, rec *HostRecord) error {
	smart := r.cfg.SmartEvacuation || r.cfg.OrchestratedRestart
	var todo []*ServerRecord
	for _, s := range rec.Servers {
		switch {
		case s.State == ServerPending, s.Pending != nil:
			todo = append(todo, s)
		case s.State == ServerRequested && smart:
			todo = append(todo, s)
		}
	}
	if len(todo) > 0 {
		groups := [][]*ServerRecord{todo}
		if r.cfg.OrchestratedRestart {
			groups = phases(todo)
		}
		for _, g := range groups {
			if err := r.issue(ctx, rec, g, smart); err != nil {
				return err
			}
			if smart {
				r.trackGroup(ctx, rec.Host, g)
				r.unlock(ctx, g)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	rec = r.store.FSM().Host(rec.Host)
	if rec == nil || rec.Phase != PhaseEvacuating {
		return errWait
	}
	var failed, open int
	for _, s := range rec.Servers {
		switch s.State {
		case ServerFailed:
			failed++
		case ServerPending:
			open++
		case ServerRequested:
			if smart {
				open++
			}
		}
	}
	if open > 0 {
		return errWait
	}
	if failed > 0 {
		if r.segmentFallback(ctx, rec) {
			return nil // failed servers back to pending for the segment's other target(s)
		}
		r.returnReservedHost(ctx, rec)
		return r.failHost(ctx, rec, fmt.Sprintf("%d of %d servers could not be evacuated", failed, len(rec.Servers)))
	}
	_, err := r.apply(ctx, CmdPhase, PhaseCmd{Host: rec.Host, Phase: PhaseEvacuated, From: PhaseEvacuating,
		Reason: fmt.Sprintf("all %d servers handled", len(rec.Servers))})
	return err
}

// isStoreErr tells a failure to commit (stop working) from a Nova failure
// (recorded, go on with the next server).
func isStoreErr(err error) bool {
	var ae *nova.APIError
	return err != nil && !errors.Is(err, errWait) && !errors.As(err, &ae)
}

// issue makes sure an evacuate call was accepted for every server of the
// group that needs one, at most max(1, EVACUATION_MAX_THREADS/WORKERS) at a
// time. In smart mode each server is locked first (R10.4). It returns an
// error only when the state can no longer be committed.
func (r *Reconciler) issue(ctx context.Context, rec *HostRecord, group []*ServerRecord, lock bool) error {
	n := max(1, r.cfg.EvacuationMaxThreads/max(1, r.cfg.Workers))
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var storeErr error
	first := true
	for _, s := range group {
		if s.State != ServerPending && s.Pending == nil {
			continue
		}
		if !first {
			r.stagger(ctx)
		}
		first = false
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		mu.Lock()
		failed := storeErr != nil
		mu.Unlock()
		if failed {
			<-sem
			break
		}
		wg.Add(1)
		go func(s *ServerRecord) {
			defer wg.Done()
			defer func() { <-sem }()
			if lock {
				if err := r.nova.Lock(ctx, s.ID, LockReason); err != nil {
					r.log.Debug("lock failed (ignored)", "server_id", s.ID, "err", err)
				}
			}
			if _, err := r.evacuateOne(ctx, rec, s); isStoreErr(err) {
				mu.Lock()
				storeErr = err
				mu.Unlock()
			}
		}(s)
	}
	wg.Wait()
	return storeErr
}

func (r *Reconciler) stagger(ctx context.Context) {
	if r.cfg.EvacuationStagger > 0 {
		r.sleep(ctx, r.cfg.EvacuationStagger)
	}
}

// unlock releases the locks of a group (R10.4: always, whatever happened).
func (r *Reconciler) unlock(ctx context.Context, group []*ServerRecord) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, s := range group {
		if err := r.nova.Unlock(uctx, s.ID); err != nil {
			r.log.Debug("unlock failed", "server_id", s.ID, "err", err)
		}
	}
}

// trackGroup follows the evacuation migrations of a group until every server is
// done or failed (R10.7, with W16 fixed: an accepted evacuation with no
// migration yet is in progress for EVACUATION_GRACE). One os-migrations
// query per interval covers the whole host.
func (r *Reconciler) trackGroup(ctx context.Context, host string, group []*ServerRecord) {
	ids := make(map[string]bool, len(group))
	for _, s := range group {
		ids[s.ID] = true
	}
	r.sleep(ctx, r.first)
	started := r.now()
	apiErrors := 0
	for ctx.Err() == nil {
		cur := r.store.FSM().Host(host)
		if cur == nil || cur.Phase != PhaseEvacuating {
			return
		}
		var open []*ServerRecord
		for _, s := range cur.Servers {
			if ids[s.ID] && s.State == ServerRequested {
				open = append(open, s)
			}
		}
		if len(open) == 0 {
			return
		}
		migs, err := r.nova.ListMigrations(ctx, nova.MigrationQuery{SourceCompute: host, MigrationType: "evacuation",
			ChangesSince: r.now().Add(-r.migrationWindow()), Limit: 1000})
		if err != nil {
			if apiErrors++; apiErrors >= 10 {
				for _, s := range open {
					_, _ = r.apply(ctx, CmdServer, ServerCmd{Host: host, ServerID: s.ID, State: ServerFailed, Error: "tracking: " + err.Error()})
				}
				return
			}
			r.sleep(ctx, r.track)
			continue
		}
		apiErrors = 0
		byServer := map[string][]nova.Migration{}
		for _, m := range migs {
			byServer[m.InstanceUUID] = append(byServer[m.InstanceUUID], m)
		}
		for _, s := range open {
			if err := r.trackOne(ctx, cur, s, byServer[s.ID]); isStoreErr(err) {
				return
			}
		}
		r.sleep(ctx, r.followFor(started))
	}
}

// followWindow is how long after an effect the leader follows its outcome
// every FollowInterval before falling back to the tracking interval: a
// rebuild with a real hypervisor takes seconds to a minute.
const followWindow = 30 * time.Second

// followFor is the interval between two looks at something begun at start.
func (r *Reconciler) followFor(start time.Time) time.Duration {
	if r.now().Sub(start) < followWindow {
		return r.follow
	}
	return r.track
}

// trackOne judges one requested server from its migrations.
func (r *Reconciler) trackOne(ctx context.Context, rec *HostRecord, s *ServerRecord, migs []nova.Migration) error {
	host := rec.Host
	since := maxTime(r.termStart, s.RequestedAt)
	if !s.TimeoutFrom.IsZero() {
		since = s.TimeoutFrom
	}
	m, found := newestFrom(migs, host, s.RequestedAt.Add(-migrationSkew))
	switch {
	case found && (m.Status == "done" || m.Status == "completed"):
		r.log.Info("server evacuated", "host", host, "server_id", s.ID, "to", m.DestCompute, "migration", m.ID)
		if _, err := r.apply(ctx, CmdServer, ServerCmd{Host: host, ServerID: s.ID, State: ServerDone, MigrationID: m.ID, To: m.DestCompute}); err != nil {
			return err
		}
		r.restoreState(ctx, s)
		return nil
	case r.now().Sub(since) > r.cfg.EvacuationTimeout:
		_, err := r.apply(ctx, CmdServer, ServerCmd{Host: host, ServerID: s.ID, State: ServerFailed, MigrationID: m.ID,
			Error: fmt.Sprintf("not rebuilt within EVACUATION_TIMEOUT %s", r.cfg.EvacuationTimeout)})
		return err
	case found && finishedBad(m.Status), !found && r.now().Sub(since) > r.cfg.EvacuationGrace:
		why := "no evacuation migration appeared within EVACUATION_GRACE"
		if found {
			why = fmt.Sprintf("migration %d %s", m.ID, m.Status)
		}
		if s.Attempts >= max(1, r.cfg.EvacuationRetries) {
			_, err := r.apply(ctx, CmdServer, ServerCmd{Host: host, ServerID: s.ID, State: ServerFailed, MigrationID: m.ID,
				Error: fmt.Sprintf("%s after %d attempts", why, s.Attempts)})
			return err
		}
		r.log.Warn("evacuation failed; retrying", "host", host, "server_id", s.ID, "why", why, "attempt", s.Attempts)
		if err := r.nova.ResetState(ctx, s.ID, "error"); err != nil {
			r.log.Warn("reset-state failed", "server_id", s.ID, "err", err)
		}
		if _, err := r.apply(ctx, CmdServer, ServerCmd{Host: host, ServerID: s.ID, State: ServerPending, Error: why}); err != nil {
			return err
		}
		cur := r.store.FSM().Host(host)
		if cur == nil || cur.Server(s.ID) == nil {
			return nil
		}
		_, err := r.evacuateOne(ctx, cur, cur.Server(s.ID))
		return err
	}
	return nil
}

// findEvacuation looks for evidence that an evacuate call for this server
// was accepted since `since`: an evacuation migration from the host, or the
// server already elsewhere or rebuilding.
func (r *Reconciler) findEvacuation(ctx context.Context, host, id string, since time.Time) (accepted bool, mig nova.Migration, srv nova.Server, err error) {
	migs, err := r.nova.ListMigrations(ctx, nova.MigrationQuery{InstanceUUID: id, MigrationType: "evacuation",
		ChangesSince: since.Add(-migrationSkew), Limit: 1000})
	if err != nil {
		return false, mig, srv, err
	}
	if m, ok := newestFrom(migs, host, since.Add(-migrationSkew)); ok {
		return true, m, srv, nil
	}
	srv, err = r.nova.GetServer(ctx, id)
	if err != nil {
		return false, mig, srv, err
	}
	if srv.Host != "" && srv.Host != host {
		return true, mig, srv, nil
	}
	return rebuildingTaskStates[srv.TaskState], mig, srv, nil
}

// newestFrom returns the newest evacuation migration from host created at
// or after since.
func newestFrom(migs []nova.Migration, host string, since time.Time) (nova.Migration, bool) {
	sort.Slice(migs, func(i, j int) bool { return migs[i].CreatedAt.After(migs[j].CreatedAt) })
	for _, m := range migs {
		if (m.SourceCompute == "" || m.SourceCompute == host) && !m.CreatedAt.Before(since) {
			return m, true
		}
	}
	return nova.Migration{}, false
}

// evacuateOne makes sure one evacuate call for the server has been accepted
// since its intent, calling Nova only when nothing shows that an earlier
// call (possibly by a previous leader) was. It returns the server's state.
func (r *Reconciler) evacuateOne(ctx context.Context, rec *HostRecord, s *ServerRecord) (ServerState, error) {
	host := rec.Host
	var op OpID
	if s.Pending != nil && s.Pending.Step == StepEvacuate {
		op = s.Pending.OpID
		if !r.inheritedSettled(op) {
			r.log.Info("evacuate intent of an earlier term: waiting until its request has landed or timed out before looking",
				"host", host, "server_id", s.ID, "op", op)
			return s.State, errWait
		}
		accepted, mig, srv, err := r.findEvacuation(ctx, host, s.ID, s.Pending.At)
		if err != nil {
			return s.State, err
		}
		if accepted {
			r.log.Info("evacuation of an unrecorded intent was accepted before the failover; not calling again",
				"host", host, "server_id", s.ID, "op", op, "migration", mig.ID)
			to := mig.DestCompute
			if to == "" && srv.Host != host {
				to = srv.Host
			}
			return ServerRequested, r.end(ctx, StepEndCmd{Host: host, Step: StepEvacuate, ServerID: s.ID, OpID: op, OK: true,
				ServerState: ServerRequested, MigrationID: mig.ID, To: to, Detail: "accepted before failover"})
		}
	} else {
		if rec.Adopted || s.Attempts > 0 {
			// R10.5: a recovery started by someone else (or an earlier
			// attempt of ours) may have evacuated it already.
			accepted, mig, srv, err := r.findEvacuation(ctx, host, s.ID, r.now().Add(-time.Hour))
			if err == nil && accepted && (mig.ID == 0 || !finishedBad(mig.Status)) {
				st := ServerRequested
				to := mig.DestCompute
				if srv.Host != "" && srv.Host != host {
					to = srv.Host
				}
				cmd := ServerCmd{Host: host, ServerID: s.ID, State: st, MigrationID: mig.ID, To: to}
				if rec.Adopted && mig.ID != 0 && !finishedGood(mig.Status) {
					// R10.5: a resumed recovery monitors the migration in
					// progress with the timeout counted from its creation.
					cmd.TimeoutFrom = mig.CreatedAt
				}
				_, err := r.apply(ctx, CmdServer, cmd)
				return st, err
			}
		}
		var err error
		if op, err = r.begin(ctx, host, StepEvacuate, s.ID, ""); err != nil {
			return s.State, err
		}
		s.Attempts++
	}
	// R10.3: a stuck task state blocks evacuate; reset it first.
	srv, err := r.nova.GetServer(ctx, s.ID)
	switch {
	case errors.Is(err, nova.ErrNotFound):
		return ServerDone, r.end(ctx, StepEndCmd{Host: host, Step: StepEvacuate, ServerID: s.ID, OpID: op, OK: true,
			ServerState: ServerDone, Detail: "server no longer exists"})
	case err == nil && srv.Host != "" && srv.Host != host:
		return ServerDone, r.end(ctx, StepEndCmd{Host: host, Step: StepEvacuate, ServerID: s.ID, OpID: op, OK: true,
			ServerState: ServerDone, To: srv.Host, Detail: "already on " + srv.Host})
	case err == nil && srv.TaskState != "":
		if rerr := r.nova.ResetState(ctx, s.ID, "error"); rerr != nil {
			r.log.Warn("reset-state before evacuate failed", "host", host, "server_id", s.ID, "err", rerr)
		}
	}
	target := ""
	if r.cfg.ForceReservedHostEvacuation && rec.ReservedHost != "" {
		target = rec.ReservedHost
	}
	var eerr error
	if rec.Segment != "" {
		// A failover segment's host: always to a host of the segment.
		target, eerr = r.evacuateInSegment(ctx, rec, s)
	} else {
		eerr = r.nova.Evacuate(ctx, s.ID, target)
	}
	if eerr != nil && target != "" && rec.Segment == "" && (errors.Is(eerr, nova.ErrConflict) || errors.Is(eerr, nova.ErrServer)) {
		r.log.Warn("evacuate to reserved host refused; retrying without a target", "host", host, "server_id", s.ID, "err", eerr)
		eerr = r.nova.Evacuate(ctx, s.ID, "")
	}
	if eerr != nil {
		st := ServerPending
		if s.Attempts >= max(1, r.cfg.EvacuationRetries) {
			st = ServerFailed
		}
		r.log.Error("evacuate refused", "host", host, "server_id", s.ID, "attempt", s.Attempts, "err", eerr)
		if err := r.end(ctx, StepEndCmd{Host: host, Step: StepEvacuate, ServerID: s.ID, OpID: op, OK: false,
			ServerState: st, Detail: eerr.Error()}); err != nil {
			return s.State, err
		}
		return st, eerr
	}
	r.log.Info("evacuate accepted", "host", host, "server_id", s.ID, "name", s.Name, "op", op, "target", target)
	return ServerRequested, r.end(ctx, StepEndCmd{Host: host, Step: StepEvacuate, ServerID: s.ID, OpID: op, OK: true,
		ServerState: ServerRequested, To: target, Detail: "accepted"})
}

func finishedGood(status string) bool { return status == "done" || status == "completed" }

func finishedBad(status string) bool {
	return status == "error" || status == "failed" || status == "cancelled"
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// restoreState is R10.8: a SHUTOFF server is stopped again, an ERROR one
// reset to error, if the rebuild changed that.
func (r *Reconciler) restoreState(ctx context.Context, s *ServerRecord) {
	if s.OrigStatus != "SHUTOFF" && s.OrigStatus != "ERROR" {
		return
	}
	srv, err := r.nova.GetServer(ctx, s.ID)
	if err != nil || srv.Status == s.OrigStatus {
		return
	}
	if s.OrigStatus == "SHUTOFF" {
		err = r.nova.Stop(ctx, s.ID)
	} else {
		err = r.nova.ResetState(ctx, s.ID, "error")
	}
	if err != nil {
		r.log.Warn("could not restore the server's status", "server_id", s.ID, "status", s.OrigStatus, "err", err)
	}
}

// unlockLeftovers releases the evacuation locks (LockReason) still held on
// the servers of a recovery that ends, whatever the mode: smart mode locks
// and unlocks each group, but a leader that died between the two, or an
// InstanceHA whose recovery IHA resumed, leaves them, and tenants then get
// "instance is locked". Locks with any other reason are the tenant's.
func (r *Reconciler) unlockLeftovers(ctx context.Context, rec *HostRecord) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, s := range rec.Servers {
		srv, err := r.nova.GetServer(uctx, s.ID)
		if err == nil && srv.Locked && srv.LockedReason == LockReason {
			if err := r.nova.Unlock(uctx, s.ID); err != nil {
				r.log.Warn("could not release an evacuation lock", "host", rec.Host, "server_id", s.ID, "err", err)
				continue
			}
			r.log.Info("evacuation lock released", "host", rec.Host, "server_id", s.ID)
		}
	}
}

// releaseLeftoverLocks is R17.1's unlock, at the start of every term: the
// servers of hosts forced down and down that carry an evacuation lock
// (IHA's or InstanceHA's: the reason is the same) are unlocked, unless a
// recovery of ours is under way on that host (it unlocks when it ends), and
// so are those of recoveries that failed.
//
// A shadow releases nothing: the locks it would find are the acting
// agent's, on servers it is evacuating now, and unlocking is a write.
func (r *Reconciler) releaseLeftoverLocks(ctx context.Context, svcs []nova.Service) {
	if r.shadowing() {
		return
	}
	fsm := r.store.FSM()
	for _, s := range svcs {
		if !s.ForcedDown || s.State != "down" {
			continue
		}
		if rec := fsm.Host(s.Host); rec != nil && rec.Phase.Active() {
			continue
		}
		servers, err := r.nova.ListServers(ctx, s.Host)
		if err != nil {
			r.log.Warn("cannot list servers to release evacuation locks", "host", s.Host, "err", err)
			continue
		}
		for _, srv := range servers {
			if !srv.Locked || srv.LockedReason != LockReason {
				continue
			}
			if err := r.nova.Unlock(ctx, srv.ID); err != nil {
				r.log.Warn("could not release an evacuation lock", "host", s.Host, "server_id", srv.ID, "err", err)
				continue
			}
			r.log.Warn("evacuation lock left behind released at leader start", "host", s.Host, "server_id", srv.ID, "name", srv.Name)
		}
	}
	for _, rec := range fsm.Hosts() {
		if rec.Phase == PhaseFailed {
			r.unlockLeftovers(ctx, rec)
		}
	}
}

// returnReservedHost is R7.5: after a failed evacuation, a reserved host
// that received nothing goes back to the pool.
func (r *Reconciler) returnReservedHost(ctx context.Context, rec *HostRecord) {
	if rec.ReservedHost == "" {
		return
	}
	servers, err := r.nova.ListServers(ctx, rec.ReservedHost)
	if err != nil || len(servers) > 0 {
		return
	}
	svc, err := r.service(ctx, rec.ReservedHost)
	if err != nil {
		return
	}
	reason := Marker(ReservedReturnPrefix, "", r.now())
	if _, err := r.nova.UpdateService(ctx, svc.ID, nova.ServiceUpdate{Status: ptr("disabled"), DisabledReason: ptr(reason)}); err != nil {
		r.log.Warn("could not return reserved host to the pool", "host", rec.Host, "reserved", rec.ReservedHost, "err", err)
	}
}
