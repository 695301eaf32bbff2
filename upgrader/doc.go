// Package upgrader is the lifecycle of baton's master: it runs N worker
// processes of one command over sockets the caller holds, replaces them
// with a new generation on request without refusing or cutting a
// connection, rolls a failing generation back, restarts a crashed worker,
// scales, and stops. It decides; internal/host does: this package touches
// the operating system only through its env.
//
// It is the engine of the baton command, not a library for other
// modules: Options names this module's internal types (the held sockets,
// the host's protocols), and a Master needs the baton binary's re-exec
// roles (Options.ShimPath). A server's Go API is package listener; a
// program that drives a running master uses package control's client.
//
// # Slots, workers, generations
//
// The master runs Options.Workers slots, 0..N-1. A slot has at most one
// serving worker and at most one incoming one (its replacement, starting,
// on probation or held); the workers it had before drain outside it. A
// generation is one release: the program and directory a reload resolved
// (symbolic links followed), so every worker of it, whenever started,
// runs the same files. A worker moves through
//
//	starting ──ready──▶ [probation ──MinReady──▶] [held ──batch ready──▶] serving ──replaced──▶ draining ──group empty──▶ gone
//
// and a slot's serving worker is replaced
//
//   - by a reload (a rollout, rollout.go): a new generation for every slot,
//     in batches of at most MaxSurge workers beside serving ones; a batch
//     takes over when all of it is ready, and a failure moves the slots
//     already moved back to the generation each ran before;
//   - by a restart after a crash (replace.go): the slot alone, with its
//     own backoff and RestartLimit, running the slot's generation;
//   - by self-healing (heal.go): the slot alone, a fresh worker of the
//     slot's generation beside the serving one, one slot at a time and
//     never while a reload moves slots;
//   - by a scale-up (scale.go), which adds slots of the serving generation.
//
// # Invariants
//
// After every event (sim_test.go's invariants, agrees and kept check these
// after each step of every fake-clock scenario in this package's tests,
// and slots_test.go after every state × event pair):
//   - every live worker is its slot's serving or incoming worker, or
//     draining; a slot's serving worker is in state serving, its incoming
//     one starting, on probation, or held, and held only within the batch
//     of the rollout under way;
//   - at most MaxSurge incoming workers run beside serving ones;
//   - a serving worker stops serving only by its own death, by a worker
//     that took its slot over, by its slot's removal (scale-down) or by a
//     stop: a rollout or a replacement never drains it first, so serving
//     capacity never drops below N during a reload except by a death;
//   - whenever a slot has nothing serving and the master is not stopping,
//     a start is under way or scheduled for it: an incoming worker, a
//     restart timer, or a move of the rollout under way. A failed reload
//     keeps this too: a slot it does not move back (its old worker died
//     during the reload) is restarted as after a crash (refill);
//   - a replacement outside a rollout (crash restart, scale-up,
//     self-healing) has its incoming worker, and at most one self-healing
//     one runs; which slot it is, is read from the slots (healingSlot),
//     never kept apart, so nothing can leave it marked as under way;
//   - every draining worker has its drain timer armed, or has been killed,
//     and a stray told to drain has its SIGKILL armed or sent;
//   - every deadline the loop keeps beside a timer (a worker's drain,
//     watchdog and --max-age, a slot's restart and replacement retry, the
//     probe, the memory check, a stray's SIGKILL) is that timer's: an
//     in-place upgrade hands each over as the time it had left, and the
//     new image arms it for that long, never afresh;
//   - once stopping, nothing starts again, and Run returns only when every
//     worker and stray has been reaped and no hook runs;
//   - during a stop delay (stop.go) nothing is starting, and the delay ends
//     as soon as its time has passed and the on-stopping hook has ended;
//     after it, every worker drains or has been killed;
//   - at most one hook (hooks.go) runs at a time, and one waits only while
//     another runs.
//
// # Goroutines and locks
//
// The loop (Master.Run) owns every field of Master (but door and
// pending, which senders read) and is the only caller of the env and so
// of internal/host.Host. Everything else reaches it as an event on one
// unbuffered channel (Master.send), each a type whose apply method is its
// whole handling (events.go), or is one of these:
//
//	goroutine                       sends                            owns / locks
//	reaper (host/reap.go)           childExited                      host.children.mu while routing a hook's or the keeper's exit
//	notify receiver, one per worker notified                         its worker's socket
//	accepting watcher, per starting readySeen                        nothing shared; cancelled by settled
//	protocol channel (tableflip)    readySeen                        its pipes
//	group watch, per draining group groupEmpty                       an eventfd to stop it
//	hook runner, one at a time      hookDone                         hookRunner.mu (the running hook's pidfd, for a fast stop)
//	timers (time.AfterFunc)         workerTimer, waitTick, restartDue,
//	                                strayKill, stopDelayOver,
//	                                socketTick, serviceWatchdogTick,
//	                                watchdogExpired, ageReached,
//	                                memoryCheck, healRetry, probeTick nothing
//	probe, one at a time            probeDone                        nothing shared
//	upgrade check run, one at a time upgradeChecked                  its pipes; keeperLink.mu to tell the keeper
//	spawner, one locked OS thread   (answers the loop's start)       the thread every worker is forked from
//	keeper link writer              nothing                          keeperProc.mu, under keeperLink.mu
//	keeper exit watch, restart timer nothing                         keeperLink.mu
//	output reader, per worker stream nothing                         its pipe; outputReaders.mu (host/output.go)
//	API callers (Reload, Scale, …)  requests with reply channels     nothing; replies are buffered
//
// Cancelling a timer is final, even when it has already fired and its
// event waits to reach the loop (it fired as the loop handled another):
// the event arrives marked cancelled and is dropped (system.after). The
// handlers still check what they act on (a workerTimer its worker's
// state, a watchdogExpired its sequence number), as the fake clock of the
// tests does not model that race.
//
// Lock order: keeperLink.mu, then host.children.mu (held across the fork
// of a hook or the keeper, and by the reaper while it hands one's exit
// back) or keeperProc.mu. No lock is held while sending to the loop, and
// the loop takes one only inside a Host call (telling the keeper, asking
// whether a child is a hook's), never across an event. While the door is
// closed for an in-place upgrade, a sender takes pendingRequests.mu
// (pending.go) instead of sending; it nests under no other lock.
package upgrader
