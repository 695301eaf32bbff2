// Package upgrader is baton's engine: it runs generations of a worker
// process over sockets the caller holds, replaces one generation with the
// next on request without refusing or cutting a connection, restarts
// crashed workers, and reaps every child.
//
// # How it works
//
// A Master keeps all of its state in one goroutine (Run). Everything else,
// signals, child exits, notify datagrams, readiness seen by a protocol,
// timers and API calls, reaches it as an event on one channel; callers that
// want an answer send a reply channel along. The loop touches the outside
// world only through an env (start a generation, signal, arm a timer), so
// every transition can be driven and checked without processes.
//
// Each generation moves through
//
//	starting ──ready──▶ [probation ──min-ready──▶] serving ──next one serves──▶ draining ──exit──▶ reaped
//
// A reload is one replacement of the serving generation by a new one; the
// first start, a crash restart and a restore after a lost socket are
// reloads too. A reload ends when the new generation serves and the old one
// has exited (success), or when the new one exits, is not ready within
// ReadyTimeout, or dies during MinReady (failure: the old generation keeps
// serving, never having been told to drain), or when a stop overtakes it.
// A new generation that dies after it took over, while the old one still
// drains, fails the reload and is restarted with backoff like any crash.
//
// # Invariants
//
// After every event:
//   - at most one generation is starting or on probation, and it belongs
//     to the reload under way;
//   - at most one generation serves, and it is the current one;
//   - every draining generation has its drain timer armed, so it is gone
//     within DrainTimeout plus the time to reap it;
//   - whenever no generation serves and the master is not stopping, a
//     start is under way or scheduled (a reload, or a restart timer);
//   - once stopping, no generation is started again, and Run returns only
//     when every worker has been reaped and no hook runs;
//   - during a stop delay (stop.go) nothing is starting, and the delay ends
//     as soon as its time has passed and the on-stopping hook has ended;
//     after it, every generation drains or has been killed;
//   - at most one hook (hooks.go) runs at a time, and one waits only
//     while another runs.
//
// master_test.go drives the loop through every state and event with a fake
// env and checks these after each step.
package upgrader
