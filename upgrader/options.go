package upgrader

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/baton-sh/baton/internal/envfile"
	"github.com/baton-sh/baton/internal/runas"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/internal/workerlog"
)

// Defaults for the zero values of Options.
const (
	DefaultReadyTimeout      = 60 * time.Second
	DefaultDrainSignal       = syscall.SIGTERM
	DefaultDrainTimeout      = 30 * time.Second
	DefaultRestartBackoff    = 100 * time.Millisecond
	DefaultRestartBackoffMax = 30 * time.Second
	DefaultRestartLimit      = 10
	DefaultHookTimeout       = 10 * time.Second
	DefaultProbeInterval     = 10 * time.Second
	DefaultProbeFailures     = 3
	DefaultMaxDraining       = 8
	// StableAfter is how long a worker must have served before its crash no
	// longer counts towards the restart limit and backoff starts over.
	StableAfter = 10 * time.Second
)

// Readiness says how the master learns that a new worker serves.
type Readiness int

const (
	// ReadyNotify waits for READY=1 on NOTIFY_SOCKET from the worker's
	// main process (sd_notify; listener.Ready in Go).
	ReadyNotify Readiness = iota
	// ReadyDelay takes a worker that is still alive after ReadyDelay as
	// ready, for programs that cannot notify. It is a timer, not a
	// readiness check: prefer ReadyAccepting.
	ReadyDelay
	// ReadyAccepting takes a worker as ready once one of its processes
	// waits for connections on one of the passed sockets (a thread in
	// accept, or the socket in an epoll set), or says READY=1, whichever
	// comes first: for servers that cannot notify.
	ReadyAccepting
)

func (r Readiness) String() string {
	switch r {
	case ReadyDelay:
		return "delay"
	case ReadyAccepting:
		return "accepting"
	}
	return "notify"
}

// NotifyAccess says whose sd_notify messages count for a generation, as
// systemd's NotifyAccess= does for a service.
type NotifyAccess int

const (
	// NotifyAll accepts messages from any process of the generation's
	// process group, so that a wrapper script's systemd-notify works.
	NotifyAll NotifyAccess = iota
	// NotifyMain accepts messages from the worker's main process only.
	NotifyMain
)

// Options configures a Master. Fields left zero take the named defaults.
type Options struct {
	// Command is the worker's argv. Command[0] is looked up anew for every
	// generation, at start and at each reload: in PATH when it has no
	// slash, relative to Dir when relative. Every worker of a generation
	// (a crash restart, a scale-up, a rollback) runs the program found
	// then.
	Command []string
	// Dir is the worker's working directory as a path, its symbolic links
	// resolved for every generation as Command[0] is, so a "current ->
	// releases/N" symlink swapped by a deploy is followed by the next
	// reload. Empty means the master's.
	Dir string
	// Env is the base environment of workers and hooks (nil: the
	// master's). Over it, in this order: User's HOME, USER, LOGNAME and
	// SHELL; Environment; then baton's own variables (socket activation,
	// NOTIFY_SOCKET, BATON_*).
	Env []string
	// User, when set, is who every worker, hook and parent stub runs as
	// (uid, gid and supplementary groups), while the master, which has
	// bound the sockets, and its keeper stay as they are: the master must
	// run as root (see internal/runas). Each worker's notify socket is
	// then reachable by User alone (and root). nil: as the master runs.
	User *runas.Identity
	// Environment (--env-file, --env) is applied over Env whenever a
	// generation is made, at start and at every reload, with its files
	// read anew then: a deploy that edits a file and reloads gives the new
	// generation the new variables, while the old one keeps its own, and
	// every worker of a generation (a crash restart, a scale-up, a
	// rollback) has the variables it was made with. A file that is
	// missing (unless optional) or malformed fails that generation with
	// one line naming the file and the line: at start, Run returns a
	// *StartupError; at a reload, the reload fails and the serving
	// generation keeps serving. A hook gets the variables of the
	// generation it is about (built anew when there is none). An
	// assignment of one of baton's own variables is left out, with a
	// warning in the log each time it is read.
	Environment envfile.Environment
	// Umask, when set, is the umask (0 to 0777) every worker and hook
	// starts with; nil: the master's own.
	Umask *int
	// Sockets are handed to every worker as fds 3, 4, … in this order. The
	// master keeps them open; the caller closes them after Run returns.
	Sockets []*sockets.Socket

	// Workers is how many worker processes each generation runs (1 unless
	// set, at most MaxWorkers), each in a slot of its own:
	// BATON_WORKER_INDEX 0..Workers-1.
	Workers int
	// MaxSurge is how many new workers a reload may start beside serving
	// ones at a time (Workers unless set): the default starts the whole
	// new generation at once, 1 replaces one worker at a time (einhorn's
	// smooth upgrade). The old workers of a batch drain when every new one
	// of it is ready, so serving capacity never drops below Workers.
	MaxSurge int

	// Protocol is how sockets and readiness reach workers
	// (ProtocolSystemd unless set).
	Protocol Protocol

	Ready        Readiness
	ReadyDelay   time.Duration // with ReadyDelay
	ReadyTimeout time.Duration // DefaultReadyTimeout
	NotifyAccess NotifyAccess
	// MinReady is how long a new generation must stay up after it is
	// ready before it replaces the old one (Kubernetes' minReadySeconds).
	// Both serve meanwhile; if the new one dies first, the reload fails
	// and the old one, never told to drain, keeps serving.
	MinReady time.Duration

	// Self-healing (heal.go): each replaces a serving worker the way a
	// reload does, a fresh worker first, the old one drained once it is
	// ready; one such replacement at a time.
	//
	// Watchdog, when positive, gives each worker WATCHDOG_USEC and
	// WATCHDOG_PID as systemd's WatchdogSec= does, and replaces a serving
	// worker that sends no WATCHDOG=1 for that long (WATCHDOG=trigger: at
	// once). A worker may change its own with WATCHDOG_USEC=.
	Watchdog time.Duration
	// MaxMemory, when positive, replaces a serving worker whose process
	// tree's resident memory passes it (bytes), checked every second.
	MaxMemory int64
	// MaxAge, when positive, replaces a worker once it has served this
	// long, give or take a twentieth so that workers do not recycle together.
	MaxAge time.Duration
	// Probe, when set, is an HTTP URL (the service's own address) that
	// must answer 2xx within ProbeTimeout: every 100 ms while new workers
	// are on probation (a failure vetoes the reload, unless the service
	// was failing before it), and every ProbeInterval while serving, where
	// ProbeFailures failures in a row replace a worker.
	Probe         string
	ProbeInterval time.Duration // DefaultProbeInterval
	ProbeFailures int           // DefaultProbeFailures
	// MaxDraining bounds how many generations may drain at once: past
	// it, the oldest draining generation is killed early. 0 means
	// DefaultMaxDraining; negative, no bound.
	MaxDraining int

	DrainSignal  syscall.Signal // DefaultDrainSignal
	DrainTimeout time.Duration  // DefaultDrainTimeout
	// DrainGroup sends the drain signal to the generation's whole process
	// group instead of its main process: for shell wrappers that do not
	// exec, and servers whose every process drains on the signal.
	DrainGroup bool

	// StopDelay is how long a requested graceful stop (Stop) keeps every
	// generation serving after the master stops claiming readiness, so
	// that load balancers and registries stop sending traffic before the
	// drain begins. A second Stop ends it early; StopNow ignores it.
	StopDelay time.Duration

	// OnReady, if set, is run (argv, no shell) each time a generation
	// becomes the serving one, and when the service serves again after
	// every worker had died; OnStopping at the start of a stop, before
	// StopDelay. hooks.go gives their environment and guarantees.
	OnReady, OnStopping []string
	// HookTimeout bounds each run of OnReady and OnStopping
	// (DefaultHookTimeout): its process group is killed after it.
	HookTimeout time.Duration

	RestartBackoff    time.Duration // first delay after a crash: DefaultRestartBackoff
	RestartBackoffMax time.Duration // DefaultRestartBackoffMax
	// RestartLimit is how many consecutive crashes the master restarts
	// before it gives up and Run returns a *CrashLoopError. Negative means
	// never give up.
	RestartLimit int

	// Subreaper makes the master adopt every orphaned descendant
	// (PR_SET_CHILD_SUBREAPER) and reap it, as PID 1 in a container must;
	// a worker that double-forks a helper then leaves no zombie behind.
	// Adopted processes that are not workers are strays: once their
	// generation's worker has exited (or at a stop) they get the drain
	// signal, and SIGKILL after the drain timeout. Without it, a worker
	// that daemonizes leaves its daemon running unsupervised. baton's
	// command line sets it unless --subreaper=false.
	Subreaper bool

	// ShimPath is a baton binary used to start workers so that LISTEN_PID
	// can be set to the worker's own PID (see internal/execshim), and the
	// keeper (see internal/keeper); its main must call internal/reexec.Init
	// first.
	// Default: /proc/self/exe, this process's own image, which a forked
	// child can still exec when the file it came from has been deleted or
	// replaced (a release directory cleaned up under a running master).
	ShimPath string
	// Stdout and Stderr are the workers' (default: the master's own),
	// unless WorkerOutput is set.
	Stdout, Stderr *os.File
	// WorkerOutput, when set, gives each worker a pipe for its stdout and
	// one for its stderr instead, and makes each line it (or anything it
	// started) writes to them a log event with its generation, slot, PID
	// and stream, written to WorkerOutput.Out: bounded in length and in
	// rate per worker, never waiting for the log (see internal/workerlog).
	// The pipes are read until their end, after the worker has exited
	// too; an in-place upgrade hands them over, and the keeper reads them
	// if the master is killed.
	WorkerOutput *workerlog.Config

	Log zerolog.Logger
	// LogFormat ("json" or "console"; otherwise console when stderr is a
	// terminal) and LogLevel are Log's, for the keeper, which logs on its
	// own when the master is gone (see internal/keeper).
	LogFormat, LogLevel string

	// Version is this build's version, as `baton version` prints it: in
	// Status and the log of an in-place upgrade.
	Version string
	// Upgrade, if set, makes the master upgradable in place (Upgrade).
	Upgrade *UpgradeOptions

	// OnEvent, if set, is called from the master's loop at each lifecycle
	// step. It must not block.
	OnEvent func(Event)

	// ServiceNotify is the NOTIFY_SOCKET of the service manager that runs
	// the master itself (systemd with Type=notify or notify-reload), or
	// empty. The master then reports READY=1 once a generation serves,
	// RELOADING=1 with MONOTONIC_USEC when a reload begins and READY=1 when
	// it ends (failed or not: the service still serves), STOPPING=1 on
	// stop, and a STATUS= line a human can read at each step.
	ServiceNotify string
	// ServiceWatchdog is the keep-alive interval that service manager
	// asks of the master (systemd's WatchdogSec=, given as WATCHDOG_USEC),
	// or 0. The loop sends WATCHDOG=1 every half of it, from the loop
	// itself, so a master whose loop is wedged falls silent and is
	// restarted by its manager, while one that is busy draining is not.
	ServiceWatchdog time.Duration
}

// MaxWorkers is the most workers a generation may have, whatever asks
// for them: --workers, a scale, SIGTTIN. Each worker costs the master a
// process and several descriptors, and each slot memory before its
// worker starts; a count far beyond any machine's cores is a typing
// mistake, refused in one line rather than forked until the master runs
// out of memory or descriptors.
const MaxWorkers = 1024

// CheckWorkers returns an error, one line, unless n is a worker count
// from 1 to MaxWorkers.
func CheckWorkers(n int) error {
	if n < 1 || n > MaxWorkers {
		return fmt.Errorf("the worker count must be from 1 to %d, not %d", MaxWorkers, n)
	}
	return nil
}

func (o *Options) setDefaults() error {
	if len(o.Command) == 0 {
		return fmt.Errorf("no worker command")
	}
	if o.Workers == 0 {
		o.Workers = 1
	}
	if err := CheckWorkers(o.Workers); err != nil {
		return err
	}
	if o.MaxSurge < 0 || o.MaxSurge > o.Workers {
		return fmt.Errorf("want a surge of 1 to %d", o.Workers)
	}
	if o.Workers > 1 && o.Protocol != ProtocolSystemd {
		return fmt.Errorf("the %s protocol runs one worker per generation: several workers need --protocol systemd", o.Protocol)
	}
	if o.Umask != nil && (*o.Umask < 0 || *o.Umask > 0o777) {
		return fmt.Errorf("umask %#o: want 0 to 0777", *o.Umask)
	}
	if o.Ready == ReadyDelay && o.ReadyDelay <= 0 {
		return fmt.Errorf("ready delay must be positive")
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.DrainSignal == 0 {
		o.DrainSignal = DefaultDrainSignal
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if u := o.Upgrade; u != nil && u.CheckTimeout == 0 {
		u.CheckTimeout = DefaultUpgradeCheckTimeout
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeFailures == 0 {
		o.ProbeFailures = DefaultProbeFailures
	}
	if o.MaxDraining == 0 {
		o.MaxDraining = DefaultMaxDraining
	}
	if o.HookTimeout == 0 {
		o.HookTimeout = DefaultHookTimeout
	}
	if o.StopDelay < 0 {
		return fmt.Errorf("stop delay must not be negative")
	}
	if o.RestartBackoff == 0 {
		o.RestartBackoff = DefaultRestartBackoff
	}
	if o.RestartBackoffMax == 0 {
		o.RestartBackoffMax = DefaultRestartBackoffMax
	}
	if o.RestartLimit == 0 {
		o.RestartLimit = DefaultRestartLimit
	}
	if o.Env == nil {
		o.Env = os.Environ()
	}
	if o.ShimPath == "" {
		o.ShimPath = "/proc/self/exe"
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	return nil
}

// Event is one lifecycle step, as logged.
type Event struct {
	Kind       EventKind
	Generation int
	PID        int
	Index      int // the worker's slot, with PID
	// Trigger is why the reload or replacement began (with ReloadStarted,
	// ReloadComplete, ReloadFailed and RolledBack).
	Trigger Trigger
	Err     error         // with ReloadFailed and RolledBack
	Took    time.Duration // with WorkerReady, ReloadComplete, ReloadFailed and RolledBack
}

// EventKind names a lifecycle step.
type EventKind int

// The lifecycle steps, in the order a reload goes through them.
const (
	ReloadStarted EventKind = iota
	WorkerStarted
	WorkerReady
	Draining
	WorkerExited
	ReloadComplete
	ReloadFailed
	// RolledBack ends a reload that failed after some slots had moved:
	// they were moved back to the generation each ran before.
	RolledBack
	Stopping
)

var eventKindText = [...]string{"reload requested", "worker started", "worker ready", "draining", "worker exited", "reload complete", "reload failed", "rolled back", "stopping"}

// String is the log message of the step, for people.
func (k EventKind) String() string { return eventKindText[k] }

// Key names the step for programs: the "event" field of its log line,
// which stays the same when the message is reworded.
func (k EventKind) Key() string { return strings.ReplaceAll(eventKindText[k], " ", "_") }

func (k EventKind) hasTrigger() bool {
	return k == ReloadStarted || k == ReloadComplete || k == ReloadFailed || k == RolledBack
}

// Trigger is why a reload or the replacement of a worker began.
type Trigger int

const (
	// TriggerStart is the first generation.
	TriggerStart Trigger = iota
	// TriggerSignal, TriggerControl and TriggerAdmin are reloads asked for
	// by SIGHUP, the control socket and the admin endpoint.
	TriggerSignal
	TriggerControl
	TriggerAdmin
	// TriggerCrash restarts a worker that died outside a reload.
	TriggerCrash
	// TriggerWatchdog, TriggerProbe, TriggerMemory and TriggerAge replace
	// a serving worker that self-healing found wanting.
	TriggerWatchdog
	TriggerProbe
	TriggerMemory
	TriggerAge
	// TriggerScale starts the worker of a slot a scale-up added.
	TriggerScale
	// TriggerRestore replaces every generation after the master had to
	// bind a socket anew (a worker shut the shared one down).
	TriggerRestore
)

var triggerText = [...]string{"start", "signal", "control", "admin", "crash", "watchdog", "probe", "memory", "age", "scale", "restore"}

func (t Trigger) String() string { return triggerText[t] }

// MarshalText makes a Trigger read as its name in JSON.
func (t Trigger) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads a Trigger's name.
func (t *Trigger) UnmarshalText(b []byte) error {
	for i, name := range triggerText {
		if name == string(b) {
			*t = Trigger(i)
			return nil
		}
	}
	return fmt.Errorf("unknown trigger %q", b)
}

// Result is how one reload or replacement ended.
type Result struct {
	// Generation is the generation serving afterwards.
	Generation int
	Took       time.Duration
	Trigger    Trigger
	// Err says why it failed; nil when the new workers serve and the old
	// ones have drained.
	Err error
	// RolledBack says that the reload failed after some workers had been
	// replaced, and that they were moved back.
	RolledBack bool
}

// Outcome is "ok", "failed" or "rolled_back".
func (r Result) Outcome() string {
	switch {
	case r.RolledBack:
		return "rolled_back"
	case r.Err != nil:
		return "failed"
	}
	return "ok"
}

// StartupError is returned by Run when the first generation never became
// ready: there was nothing to keep serving.
type StartupError struct{ Err error }

func (e *StartupError) Error() string { return "first worker never became ready: " + e.Err.Error() }
func (e *StartupError) Unwrap() error { return e.Err }

// CrashLoopError is returned by Run when a worker kept crashing past
// Options.RestartLimit.
type CrashLoopError struct {
	Crashes int
	Last    error
}

func (e *CrashLoopError) Unwrap() error { return e.Last }

func (e *CrashLoopError) Error() string {
	return fmt.Sprintf("worker crashed %d times in a row (last: %v); giving up", e.Crashes, e.Last)
}
