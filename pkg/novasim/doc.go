// Package novasim is a simulated Keystone v3, Nova (Zed, microversions
// 2.1–2.93) and Glance v2 that IHA's leader tests, benchmarks and dev mode
// run against over real HTTP (and real gophercloud).
//
// It owns: the simulated control plane's state (services and their
// heartbeats, servers, migrations, flavors, images, aggregates, tokens),
// the HTTP surface IHA uses, and "the host" controls a test needs (stop and
// start a nova-compute, inject faults, revoke tokens, count calls). It must
// never depend on IHA's own packages (it is what they are tested against),
// never start a goroutine per compute (heartbeats are computed from the
// clock), and never listen on anything but 127.0.0.1.
//
// # Time
//
// All simulated time is lazy. A running compute reports at
// hbStart + k×ReportInterval; updated_at and last_seen_up are those reports
// truncated to whole seconds (updated_at is also bumped by admin updates of
// the row); state is computed on read from last_seen_up against
// ServiceDownTime, or down at once when forced_down. Evacuation steps and
// restart cleanups are timed events applied, in time order, by every call
// that reads or writes state (advanceLocked). State is therefore a pure
// function of the clock and the calls, and 1,000 computes cost nothing
// while idle.
//
// # Verified against real Nova 26.2.2 (docs/real-peers.md)
//
//   - report_interval / service_down_time; service_down_time <= report_interval
//     becomes 2.5 × report_interval; first heartbeat 5 s after a start.
//   - updated_at stored in whole seconds and bumped by admin updates
//     (force-down, disable); state from last_seen_up.
//   - PUT /os-services/{uuid} at 2.53 with forced_down, status and
//     disabled_reason; 2.11's force-down, disable-log-reason, enable.
//   - evacuate: 200 with an empty body at ≥ 2.29; 2.68 accepts host;
//     source still up → 400 "Compute service of H is still in use.";
//     unknown target → 404; down-but-not-forced source can be evacuated;
//     an evacuated ACTIVE server stays ACTIVE (Zed).
//   - forced_down false → 400 while "done" evacuation migrations remain;
//     a nova-compute restart destroys the evacuated guests and turns the
//     migrations done → completed (SIGCONT is not enough), one at a time
//     (RestartCleanupStep; ~0.3–1 s apart on the lab), so the 400 can
//     follow the first completed one.
//   - evacuate checks vm_state only (active, stopped, error; else 409): a
//     task state never blocks it (powering-off is overwritten with
//     rebuilding); only a live source refuses (400).
//   - a source restarted mid-evacuation marks its accepted and
//     pre-migrating evacuations completed too; the rebuild then saves
//     pre-migrating and done over that row, which stays done (forced_down
//     false refused) until the source's next restart.
//   - a second evacuate while the first is rebuilding is 200: its
//     migration stays accepted for good, the server lands on the first
//     one's destination and then goes to ERROR; a restart of the source
//     completes only the newest migration per server.
//   - os-migrations: migration_type and uuid at 2.59; ?type= is ignored at
//     2.1 and a 400 at ≥ 2.59. Flavor extra specs embedded at 2.47.
//     Both microversion headers work; max 2.93.
//   - a stopped (SIGSTOP) compute still holds its guests: the split brain
//     fencing prevents (see Guests).
//
// # Assumptions (from Nova's code or API reference, not yet run on real Nova)
//
// The contract suite in ./contract checks the ones IHA relies on against
// real Nova when the lab runs it.
//
//   - Check order in evacuate: body schema (400), target host known (404),
//     target ≠ source (400), vm_state active, stopped or error (409), source
//     service down (400).
//   - A named target host that is down or disabled → 400 here; real Nova
//     may instead accept and fail in the scheduler.
//   - No valid host for an evacuation: 200, then the migration goes to
//     "error" and the server keeps its host with task_state null and
//     vm_state error (the conductor's NoValidHost handling).
//   - Evacuation timeline: accepted → pre-migrating (scheduled) at
//     EvacuationDelay/2 → done at EvacuationDelay; task_state "rebuilding"
//     (status REBUILD) meanwhile; SHUTOFF stays SHUTOFF and ERROR becomes
//     ACTIVE (a rebuild of an error instance). A stopped destination holds
//     the rebuild until it starts.
//   - os-stop/os-start on a server whose compute is stopped leave it in
//     powering-off/powering-on (the cast waits in the queue) until that
//     compute restarts.
//   - The scheduler: enabled and up computes only (ComputeFilter), then the
//     RAM weigher with ties shuffled (shuffle_best_same_weighed_hosts).
//     availability_zone "zone:host" pins the host with no filters (forced
//     host); an unknown pinned host gives an ERROR server (NoValidHost).
//   - Servers are ACTIVE as soon as POST /servers answers (real Nova goes
//     through BUILD for a few seconds); DELETE removes the row at once.
//   - A compute's zone is the one given to AddCompute; aggregates do not
//     change it.
//   - Timestamps: os-services, os-migrations and aggregates print
//     "2006-01-02T15:04:05.000000" (no zone); servers print
//     "2006-01-02T15:04:05Z".
package novasim
