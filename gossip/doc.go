// Package gossip is IHA's membership mesh: the only package that imports
// hashicorp/memberlist (SWIM with Lifeguard). Agents on computes and leaders
// on controllers are members; the leader reads what the mesh sees and turns
// it into verdicts (that is leader/'s job, not this package's).
//
// What it owns:
//   - Mesh: joining (retried forever with jittered backoff), periodic
//     re-join of the Join addresses no live member answers at and of dead
//     members so that a healed
//     partition merges again (memberlist never does it by itself), graceful
//     leave, encryption (keyring file, rotation by add/use/remove, see
//     LoadKeyring), a cluster label so that two clouds never merge.
//   - Meta: the metadata each member advertises (role, Nova host name, IHA
//     version, a controller's API address), a versioned binary encoding
//     under memberlist's 512-byte limit, fuzzed (FuzzDecodeMeta).
//   - Profile: the failure-detector knobs as config keys, with the
//     detection-time formula in its doc comment and methods.
//   - Events for the leader, each timestamped with this node's clock:
//     Alive (joined, rejoined, or a suspicion refuted), Suspect (one per
//     accuser), Dead (with the accusers heard and, when this node's own
//     timer fired, memberlist's confirmation count), Left, Updated.
//   - Kdump relay: BroadcastKdump sends a notice directly (TCP) to every
//     controller and by gossip to everyone; KdumpNotices delivers each
//     notice once on every member.
//   - Identity (identity.go): agents with a host key prove to the
//     controllers which Nova host they speak for (Member.Claim) and sign
//     what they say; controllers with the cluster key drop what does not
//     verify, and every node drops a leave or refutation one member
//     announces for another.
//
// How the events are derived, because memberlist does not expose them all:
//   - Join/Dead/Left/Updated come from memberlist's EventDelegate. Its
//     NotifyLeave covers dead and left alike, and the Node it passes has a
//     State field memberlist never updates; so a leaving Mesh first sends a
//     "leave" intent (directly to controllers, then by gossip) and only then
//     calls memberlist's Leave: a member whose intent was heard is Left,
//     otherwise Dead. An intent arriving after the dead verdict turns it
//     into Left with a second event (Reason says so).
//   - Suspect is not a memberlist event. memberlist logs "Suspect X has
//     failed, no acks received" on the accuser; the log bridge turns that
//     into a local Suspect event and an "accuse" message sent (UDP, best
//     effort) to every controller, so controllers learn who accused whom;
//     computes only see their own accusations. The suspect side logs
//     "Refuting a suspect message" and tells the controllers ("refute");
//     they emit Alive with Refuted. Controllers also ping suspects directly
//     (an ack clears the suspicion), and a suspect neither dead nor refuted
//     after the maximum suspicion timeout is set back to alive (Reason
//     says so).
//   - Leave intents and kdump notices are relayed epidemically (each member
//     re-queues a message it sees for the first time), deduplicated by id.
//
// Concurrency: every Mesh method is safe for concurrent use. memberlist
// calls the delegates with its node lock held, so they never block and
// never call memberlist; events go through an internal FIFO. Lock order
// (a deadlock found by the benchmarks): memberlist may log while holding its
// node lock, its logger serialises writers, and the broadcast queue asks
// NumNodes while holding its own lock; so the log bridge never blocks (it
// hands what it observes to a goroutine) and NumNodes reads our own count.
//
// What it must never do: decide anything about a host (no verdicts, no
// Nova, no fencing), trust a member's metadata beyond parsing it (a
// verified Claim is what vouches for a host), or log key material. Only this package (and its memnet test network) imports
// memberlist.
//
// Time to detect a crash, and the stalls a member survives, follow from
// memberlist's code (suspicion.go, util.go suspicionTimeout; state.go
// probeNode): Profile states the formulas; ExpectedDetection,
// StallTolerance and StoppedTolerance compute them. With the default
// profile, FastProfile, in a mesh that keeps up:
//
//	members                         10      100     1,000
//	crash → declared dead           3.3 s   5.3 s   7.3 s   ExpectedDetection
//	stall never declared dead:
//	  the host, every packet lost   1 s     3 s     5 s     StallTolerance
//	  the process (SIGSTOP)         2 s     4 s     6 s     StoppedTolerance
//	LANProfile: dead at 6.6 s, 10.6 s, 14.6 s; stalls of 2 s, 6 s, 10 s
//	(4 s, 8 s, 12 s stopped) never declared dead.
//
// A member that stalls for less than that (a frozen host, a paused VM, a
// network cut) is at most suspected: it refutes when the first probe after
// the stall carries the suspicion to it, or at once if its socket kept the
// probes and the suspicion while it was stopped. Between the two models lies
// what a real frozen host does with its packets; IHA states the pessimistic
// one for a frozen host (TestStallShorterThanToleranceIsNotDead proves it
// for the default at 5 members) and the other for a stopped process
// (TestStoppedAgentWithinToleranceIsNotDead, a real iha-agent). A
// CPU-starved member that runs a fraction of every second (stopped 50–80 % of
// every 100 ms–1 s) is suspected now and then and never declared dead. The
// measurements (BenchmarkDetection, BenchmarkAgentStall, BenchmarkAgentCost,
// BenchmarkFalseDeadUnderLoss), their conditions, and the history of the
// mesh changes they led to are in docs/benchmarks.md.
package gossip
