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
//   - reconciler.go (the poll loop and Cycle) and one file per stage of a
//     cycle: detect.go (which hosts failed), admit.go (the gates, as an
//     ordered list), workflow.go and evacuate.go (fence, force-down, plan,
//     evacuate, finish), reenable.go (bring a recovered host back). Every
//     side effect commits an intent to Raft, performs the effect, and
//     commits the result, so a new leader resumes from the last committed
//     step and re-checks the world for an intent without a result. The
//     reconciler reads its configuration as a Policy (policy.go) and Nova
//     through NovaReader/NovaWriter; detect and admit hold only the reader.
//
// The package must never act before a Barrier of the current term, and never
// evacuate a host whose fence is not confirmed, unless the operator chose
// QUICK_EVACUATE_LEVEL 1.
package leader
