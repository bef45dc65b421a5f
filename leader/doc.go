// Package leader is the controller side of IHA: a Raft node whose FSM holds
// every compute host's recovery record, and, on the Raft leader only, the
// reconciler that reads Nova, judges hosts, fences, forces services down,
// and evacuates servers.
//
// Three layers, each in its own files:
//   - fsm.go, commands.go, state.go: the replicated state. Apply is pure:
//     no clock, no configuration, no I/O; timestamps travel inside commands.
//     Nothing here may call time.Now or read config.
//   - rules.go, tags.go: InstanceHA's decision rules as pure functions of
//     Nova data (categorisation, gates, thresholds, tag filtering).
//   - reconciler.go, recovery.go, evacuate.go: the side effects. Every step
//     commits an intent to Raft, performs the effect, and commits the result,
//     so a new leader resumes from the last committed step and re-checks the
//     world for an intent without a result.
//
// The package must never act before a Barrier of the current term, and never
// evacuate a host whose fence is not confirmed, unless the operator chose
// QUICK_EVACUATE_LEVEL 1.
package leader
