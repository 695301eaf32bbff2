package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/admin"
	"github.com/baton-sh/baton/internal/fdlimit"
	"github.com/baton-sh/baton/internal/logging"
	"github.com/baton-sh/baton/internal/serverhints"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/internal/workerlog"
	"github.com/baton-sh/baton/notify"
	"github.com/baton-sh/baton/pidfile"
	"github.com/baton-sh/baton/upgrader"
)

type masterFlags struct {
	listen       listFlag
	workers      int
	maxSurge     int
	watchdog     time.Duration
	maxMemory    string
	maxAge       time.Duration
	probe        string
	probeEvery   time.Duration
	probeFails   int
	maxDraining  int
	pidfile      string
	dir          string
	ready        string
	readyTimeout time.Duration
	notifyAccess string
	minReady     time.Duration
	drainSignal  string
	drainTimeout time.Duration
	drainGroup   bool
	restartLimit int
	protocol     string
	subreaper    bool
	control      string
	admin        string
	lifecycle    bool
	stopDelay    time.Duration
	onReady      string
	onStopping   string
	hookTimeout  time.Duration
	logFormat    string
	logLevel     string
	workerOutput string
	outputRate   int
	privileges   privilegeFlags
}

func masterFlagSet(f *masterFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("baton", flag.ContinueOnError)
	fs.Var(&f.listen, "listen", "`[NAME=]SPEC` socket to hold and pass to workers, repeatable: tcp://HOST:PORT, tcp4://, tcp6://, udp://HOST:PORT, unix:///PATH?mode=0660")
	fs.IntVar(&f.workers, "workers", 1, "worker processes per generation, each in a slot of its own (BATON_WORKER_INDEX 0..N-1); a crashed one restarts alone; SIGTTIN and SIGTTOU add and remove one")
	fs.IntVar(&f.maxSurge, "max-surge", 0, "how many new workers a reload starts beside serving ones at a time (default: all of them); 1 replaces one worker at a time, each old one drained once its replacement is ready; a failed reload moves the replaced ones back")
	fs.DurationVar(&f.watchdog, "watchdog", 0, "give workers WATCHDOG_USEC as systemd's WatchdogSec= does, and replace a serving worker that sends no WATCHDOG=1 for this `DURATION` (a fresh one first; WATCHDOG=trigger asks at once)")
	fs.StringVar(&f.maxMemory, "max-memory", "", "replace a serving worker whose process tree's resident memory passes `SIZE` (e.g. 512MB, 2GB), checked every second")
	fs.DurationVar(&f.maxAge, "max-age", 0, "replace a worker once it has served this `DURATION`, give or take a twentieth (workers started together do not recycle together)")
	fs.StringVar(&f.probe, "probe", "", "HTTP `URL` of the service's own address that must answer 2xx within 1s: vetoes a release on --min-ready probation; --probe-failures in a row replace a worker")
	fs.DurationVar(&f.probeEvery, "probe-interval", upgrader.DefaultProbeInterval, "how often --probe runs while nothing is on probation")
	fs.IntVar(&f.probeFails, "probe-failures", upgrader.DefaultProbeFailures, "--probe failures in a row that replace a worker")
	fs.IntVar(&f.maxDraining, "max-draining", upgrader.DefaultMaxDraining, "kill the oldest draining generation early when more than this many drain (0: no limit)")
	fs.StringVar(&f.pidfile, "pidfile", "", "write the master's PID to `PATH` and hold it locked while baton runs (removed on exit)")
	fs.StringVar(&f.dir, "dir", "", "worker working `DIR`, resolved anew at every reload (default: the current directory as the shell names it)")
	fs.StringVar(&f.ready, "ready", "notify", "how a new worker counts as ready: `notify` (READY=1 on NOTIFY_SOCKET), accepting (a process of it waits in accept/epoll/poll on a passed socket, or READY=1), or delay=DURATION")
	fs.DurationVar(&f.readyTimeout, "ready-timeout", upgrader.DefaultReadyTimeout, "drain a new worker not ready after this long; the old one keeps serving")
	fs.StringVar(&f.notifyAccess, "notify-access", "all", "whose READY=1, STATUS= and STOPPING=1 count: `all` (any process of the worker's process group) or main (its main process)")
	fs.DurationVar(&f.minReady, "min-ready", 0, "keep both generations serving until the new one has stayed up this long after it is ready; if it dies first the reload fails and the old one serves on")
	fs.BoolVar(&f.drainGroup, "drain-group", false, "send the drain signal to the worker's whole process group (shell wrappers without exec; servers whose every process drains on it)")
	fs.StringVar(&f.drainSignal, "drain-signal", "TERM", "`SIGNAL` that tells an old worker to finish in-flight work and exit")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", upgrader.DefaultDrainTimeout, "SIGKILL an old worker's process group still running after this long")
	fs.IntVar(&f.restartLimit, "restart-limit", upgrader.DefaultRestartLimit, "consecutive worker crashes to restart before exiting 1 (-1: never give up)")
	fs.StringVar(&f.protocol, "protocol", "systemd", "how sockets and readiness reach the worker: `systemd` (LISTEN_FDS, NOTIFY_SOCKET), or the parent side of tableflip, endless or grace (an unmodified github.com/cloudflare/tableflip, github.com/fvbock/endless or github.com/facebookgo/grace app)")
	fs.BoolVar(&f.subreaper, "subreaper", true, "adopt orphaned descendants, reap them, and stop those a worker left running once its generation ends (--subreaper=false to opt out; always on as PID 1)")
	fs.StringVar(&f.control, "control", "", "unix control socket `PATH` for baton reload/status, mode 0600 (default: next to --pidfile, app.pid → app.control.sock)")
	fs.StringVar(&f.admin, "admin", "", "serve /-/healthy, /-/ready and /metrics over HTTP on `HOST:PORT` (off by default)")
	fs.BoolVar(&f.lifecycle, "admin-lifecycle", false, "also accept POST /-/reload, POST /-/quit, POST /-/scale?workers=N and POST /-/upgrade on the --admin endpoint (refused with 403 without it)")
	fs.DurationVar(&f.stopDelay, "stop-delay", 0, "on TERM/INT, stop claiming readiness (admin /-/ready 503) and keep serving this long before draining, so load balancers stop sending traffic first; a second TERM skips the rest")
	fs.StringVar(&f.onReady, "on-ready", "", "run `CMD` (split into words, no shell) each time a generation becomes the serving one, e.g. to register it; it gets BATON_GENERATION, BATON_WORKER_PID and BATON_ADDRS")
	fs.StringVar(&f.onStopping, "on-stopping", "", "run `CMD` (split into words, no shell) when a stop begins, before --stop-delay, e.g. to deregister; the drain waits for it")
	fs.DurationVar(&f.hookTimeout, "hook-timeout", upgrader.DefaultHookTimeout, "kill an --on-ready or --on-stopping command's process group after this long")
	fs.StringVar(&f.logFormat, "log-format", "auto", "`FORMAT`: json, console, or auto (console when stderr is a terminal)")
	fs.StringVar(&f.logLevel, "log-level", "info", "`LEVEL`: debug, info, warn or error")
	fs.StringVar(&f.workerOutput, "worker-output", "auto", "`MODE` of workers' stdout and stderr: log (each line a log event with gen, index, pid and stream), inherit (baton's own stdout and stderr, as they are), or auto (log when the log is JSON, inherit on a console)")
	fs.IntVar(&f.outputRate, "worker-output-rate", workerlog.DefaultRate, "with --worker-output log, the `LINES` a second each worker may log, averaged over 10s; more are dropped and counted (0: no limit)")
	f.privileges.define(fs)
	return fs
}

// masterGCPercent keeps the master's heap small. It lives for months and
// allocates a little at each reload but holds well under 1 MB: at Go's
// default of 100 the heap grows to its 4 MB minimum goal before the first
// collection, which is most of the master's private memory; at 25 the goal
// is 1 MB, and collecting a heap that small costs well under a millisecond.
// GOGC in the environment still wins.
const masterGCPercent = 25

// memoryTidier returns a function that, without blocking, has the heap
// collected and its free pages handed back to the kernel, once a reload
// has ended. The runtime's background scavenger would return them only
// slowly, so the master's private memory would sit near its high-water
// mark between reloads; a soft memory limit (GOMEMLIMIT) does keep it low
// but makes the runtime collect over and over, 30 times the CPU. One
// collection of a heap this small after a reload costs well under a
// millisecond, and nothing runs while the master is idle.
func memoryTidier() func() {
	due := make(chan struct{}, 1)
	go func() {
		for range due {
			debug.FreeOSMemory()
		}
	}()
	return func() {
		select {
		case due <- struct{}{}:
		default: // one is pending already
		}
	}
}

// masterCmd runs the master until it is stopped and returns its exit code.
func masterCmd(args []string, stdout, stderr io.Writer) int {
	self := selfPath()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(masterGCPercent)
	}
	var f masterFlags
	fs := masterFlagSet(&f)
	opts, err := f.parse(fs, args)
	if code, ok := helped(stdout, fs, err); ok {
		return code
	}
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	lg, err := logging.New(os.Stderr, f.logFormat, f.logLevel)
	if err != nil {
		return fail(stderr, fs, usageError{err.Error()}, exitUsage)
	}
	// Runs last: whatever is still queued, the verdict line included, is
	// written out, waiting at most logging.FlushTimeout for the reader.
	defer lg.Close()
	// From here on every line, the last one too, goes through the log's
	// queue: a stalled reader of stderr cannot block the master's exit.
	stderr = lg.Stderr()
	log := lg.Logger
	opts.Log = log
	if f.workerOutput == "log" || (f.workerOutput == "auto" && !lg.Console()) {
		// Worker lines go through the log's own queue, in its format,
		// so that neither a flood nor a stalled reader holds anyone up.
		opts.WorkerOutput = &workerlog.Config{Out: lg.Output(), Console: lg.Console(), Rate: f.outputRate}
		if f.outputRate == 0 {
			opts.WorkerOutput.Rate = -1
		}
	}
	opts.LogFormat, opts.LogLevel = f.logFormat, f.logLevel // contain: for the keeper
	// A classic server run with a drain signal that cuts its requests
	// (docs/servers.md) still reloads fine on the surface: say so once.
	for _, w := range serverhints.Warnings(opts.Command, opts.DrainSignal) {
		log.Warn().Str("event", "server_hint").Msg(w)
	}
	if f.dir == "" && os.Getenv("PWD") == "" {
		// systemd's WorkingDirectory= and supervisord's directory= set no $PWD.
		log.Info().Str("event", "workdir_fixed").Str("dir", opts.Dir).Msg("working directory resolved once at start; --dir follows a symlinked release directory at every reload")
	}

	// Signals are caught before anything else exists: a HUP or TERM that
	// arrives as soon as the pidfile names this process must be a request
	// to the master, not the default action that would kill it. They wait
	// in sigc until the master runs; a HUP before the first generation is
	// ready becomes a reload queued behind that start.
	sigc := catchSignals()
	defer signal.Stop(sigc)

	privileges, err := f.privileges.resolve()
	if err != nil {
		return fail(stderr, fs, err, exitStartup)
	}
	for _, w := range privileges.warnings {
		log.Warn().Str("event", w.event).Msg(w.msg)
	}
	privileges.workers.apply(&opts)

	// An in-place upgrade's new image takes over what its old image held;
	// anything else starts afresh.
	handed, err := upgrader.TakeHandOver()
	if err != nil {
		return fail(stderr, fs, fmt.Errorf("in-place upgrade: %w", err), exitRuntime)
	}
	var parts masterParts
	var kept carried
	if handed != nil {
		if kept, err = takeCarried(handed); err != nil {
			return fail(stderr, fs, fmt.Errorf("in-place upgrade: %w", err), exitRuntime)
		}
	}
	if f.pidfile != "" {
		var pf *pidfile.File
		if fd, ok := handed.File(filePidfile); ok {
			if pf, err = pidfile.Adopt(f.pidfile, fd); err == nil && !pf.Intact() {
				log.Warn().Str("event", "pidfile_lost").Str("path", f.pidfile).
					Msg("the pidfile was removed or replaced while baton ran: baton reload, status and upgrade find this master with --control; restart baton to write it again")
			}
		} else {
			pf, err = pidfile.Acquire(f.pidfile)
		}
		if err != nil {
			return fail(stderr, fs, fdlimit.Explain(err), exitStartup)
		}
		parts.pidfile = pf
		defer func() {
			if err := pf.Release(); err != nil {
				log.Warn().Str("event", "pidfile_left").Err(err).Msg("pidfile left behind")
			}
		}()
	}
	var sockets []*sockets.Socket
	if handed != nil {
		sockets, err = adoptSockets(f.listen, kept)
	} else {
		sockets, err = openSockets(f.listen, log)
	}
	if err != nil {
		return fail(stderr, fs, err, exitStartup)
	}
	opts.Sockets, parts.sockets = sockets, sockets
	defer closeAll(sockets, log)

	// The gauges read the master's status at each scrape.
	var m *upgrader.Master
	metrics := admin.NewMetrics(func() (upgrader.Status, error) { return m.Status() })
	metrics.CountLogDrops(lg.Dropped)
	metrics.Resume(kept.Counters)
	parts.metrics, parts.log = metrics, lg
	parts.signals = newDispatcher(sigc)
	opts.Version = versionString()
	opts.Upgrade = parts.upgradeOptions(self)
	tidy := memoryTidier()
	opts.OnEvent = func(e upgrader.Event) {
		metrics.Observe(e)
		if e.Kind == upgrader.ReloadComplete || e.Kind == upgrader.ReloadFailed {
			tidy()
		}
	}
	// baton's own service manager, when systemd runs it as Type=notify;
	// workers get baton's NOTIFY_SOCKET instead of this one.
	opts.ServiceNotify = os.Getenv("NOTIFY_SOCKET")
	// And its watchdog (WatchdogSec=), fed from the master's loop.
	opts.ServiceWatchdog, _ = notify.Watchdog()
	if p := os.Getenv("WATCHDOG_PID"); opts.ServiceWatchdog == 0 && p != "" && os.Getenv("WATCHDOG_USEC") != "" && p != strconv.Itoa(os.Getpid()) {
		// systemd watches its main process, here not baton (a shell
		// that did not exec it, say): it will restart the unit at every
		// WatchdogSec=, and nothing else would say why.
		log.Warn().Str("event", "service_watchdog_not_ours").Str("watchdog_pid", p).
			Msgf("the service manager's watchdog (WATCHDOG_USEC) watches pid %s, not baton (pid %d), so baton cannot feed it: if a shell runs baton, start baton with exec", p, os.Getpid())
	}
	if handed != nil {
		m, err = upgrader.Resume(opts, handed)
	} else {
		m, err = upgrader.New(opts)
	}
	if err != nil {
		return fail(stderr, fs, err, exitStartup)
	}

	if path := f.controlPath(); path != "" {
		var ctl *control.Server
		if handed != nil && kept.Control != nil {
			ctl, err = control.Adopt(path, *kept.Control, log)
		} else {
			ctl, err = control.Listen(path, log, privileges.control...)
		}
		if err != nil {
			return fail(stderr, fs, err, exitStartup)
		}
		parts.control = ctl
		defer func() {
			if err := ctl.Close(); err != nil {
				log.Warn().Str("event", "control_left").Err(err).Str("path", path).Msg("control socket left behind")
			}
		}()
		go ctl.Serve(m)
		log.Info().Str("event", "control_listening").Str("path", path).Msg("control socket")
	}
	if f.admin != "" {
		var adm *admin.Server
		if fd, ok := handed.File(fileAdmin); ok {
			adm, err = admin.Adopt(fd, m, metrics, f.lifecycle)
		} else {
			adm, err = admin.Listen(f.admin, m, metrics, f.lifecycle)
		}
		if err != nil {
			return fail(stderr, fs, err, exitStartup)
		}
		parts.admin = adm
		defer adm.Close()
		go adm.Serve()
		log.Info().Str("event", "admin_listening").Str("addr", adm.Addr().String()).Bool("lifecycle", f.lifecycle).Msg("admin endpoint")
	}
	go parts.signals.run(m)

	err = m.Run()
	var startup *upgrader.StartupError
	switch {
	case err == nil:
		log.Info().Str("event", "stopped").Msg("stopped")
		return exitOK
	case errors.As(err, &startup):
		fmt.Fprintf(stderr, "baton: %s\n", fdlimit.Explain(err))
		return exitStartup
	default:
		fmt.Fprintf(stderr, "baton: %s\n", err)
		return exitRuntime
	}
}

// parse checks every flag and turns them into upgrader options.
func (f *masterFlags) parse(fs *flag.FlagSet, args []string) (upgrader.Options, error) {
	var o upgrader.Options
	if err := parseFlags(fs, args); err != nil {
		return o, err
	}
	o.Command = fs.Args()
	if len(o.Command) > 0 && !afterDashes(args, o.Command) {
		return o, bareWord(fs, args, o.Command)
	}
	if len(o.Command) == 0 {
		return o, usagef("no worker command: put it after --, e.g. baton --listen tcp://127.0.0.1:8080 -- ./server")
	}
	if o.Command[0] == "" {
		return o, usagef("the worker command after -- is empty: name a program, e.g. -- ./server")
	}
	if path := f.controlPath(); path != "" {
		if err := sockets.CheckUnixPath(path); err != nil {
			return o, usagef("control socket (--control, or next to --pidfile): %v", err)
		}
	}
	if err := f.privileges.check(f.controlPath() != ""); err != nil {
		return o, err
	}
	names := map[string]bool{}
	for i, raw := range f.listen {
		spec, err := sockets.ParseSpec(raw, i)
		if err != nil {
			return o, usageError{err.Error()}
		}
		if names[spec.Name] {
			return o, usagef("listen %q: name %q is used twice", raw, spec.Name)
		}
		names[spec.Name] = true
	}
	switch {
	case f.ready == "notify":
		o.Ready = upgrader.ReadyNotify
	case f.ready == "accepting":
		o.Ready = upgrader.ReadyAccepting
	case strings.HasPrefix(f.ready, "delay="):
		d, err := time.ParseDuration(strings.TrimPrefix(f.ready, "delay="))
		if err != nil || d <= 0 {
			return o, usagef("--ready %q: want delay=DURATION such as delay=2s", f.ready)
		}
		o.Ready, o.ReadyDelay = upgrader.ReadyDelay, d
	default:
		return o, usagef("--ready %q: want notify, accepting or delay=DURATION", f.ready)
	}
	if f.readyTimeout <= 0 || f.drainTimeout <= 0 {
		return o, usagef("--ready-timeout and --drain-timeout must be positive")
	}
	switch f.notifyAccess {
	case "all":
		o.NotifyAccess = upgrader.NotifyAll
	case "main":
		o.NotifyAccess = upgrader.NotifyMain
	default:
		return o, usagef("--notify-access %q: want all or main", f.notifyAccess)
	}
	if f.minReady < 0 {
		return o, usagef("--min-ready %s: want a duration of 0 or more", f.minReady)
	}
	o.MinReady, o.DrainGroup = f.minReady, f.drainGroup
	if f.admin != "" {
		if _, port, err := net.SplitHostPort(f.admin); err != nil || !validPort(port) {
			return o, usagef("--admin %q: want HOST:PORT, such as 127.0.0.1:9090", f.admin)
		}
	}
	if f.stopDelay < 0 {
		return o, usagef("--stop-delay %s: want a duration of 0 or more", f.stopDelay)
	}
	if f.hookTimeout <= 0 {
		return o, usagef("--hook-timeout %s: want a positive duration", f.hookTimeout)
	}
	o.StopDelay, o.HookTimeout = f.stopDelay, f.hookTimeout
	switch f.workerOutput {
	case "auto", "log", "inherit":
	default:
		return o, usagef("--worker-output %q: want log, inherit or auto", f.workerOutput)
	}
	if f.outputRate < 0 {
		return o, usagef("--worker-output-rate %d: want a count of lines a second, or 0 for no limit", f.outputRate)
	}
	for _, h := range []struct {
		flag, value string
		argv        *[]string
	}{{"--on-ready", f.onReady, &o.OnReady}, {"--on-stopping", f.onStopping, &o.OnStopping}} {
		argv, err := splitWords(h.value)
		if err != nil {
			return o, usagef("%s %q: %v", h.flag, h.value, err)
		}
		if h.value != "" && len(argv) == 0 {
			return o, usagef("%s %q: no command", h.flag, h.value)
		}
		*h.argv = argv
	}
	o.ReadyTimeout, o.DrainTimeout = f.readyTimeout, f.drainTimeout
	sig, err := upgrader.ParseSignal(f.drainSignal)
	if n := strings.TrimPrefix(strings.ToUpper(f.drainSignal), "SIG"); n == "CHLD" || n == "CLD" {
		sig, err = syscall.SIGCHLD, nil
	}
	if err != nil {
		return o, usagef("--drain-signal: %v", err)
	}
	switch sig {
	case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGCHLD:
		// KILL and STOP cannot be caught, so no worker can drain on them;
		// CHLD is ignored by default, so no worker would ever stop.
		return o, usagef("--drain-signal %s: a worker cannot drain on it; use a signal it can catch, such as TERM (the default), INT, QUIT or USR1", f.drainSignal)
	}
	o.DrainSignal = sig
	if f.restartLimit == 0 || f.restartLimit < -1 {
		return o, usagef("--restart-limit %d: want -1 (never give up) or a count of at least 1", f.restartLimit)
	}
	o.RestartLimit = f.restartLimit
	if o.Protocol, err = upgrader.ParseProtocol(f.protocol); err != nil {
		return o, usagef("--protocol: %v", err)
	}
	switch {
	case upgrader.CheckWorkers(f.workers) != nil:
		return o, usagef("--workers %d: want 1 to %d", f.workers, upgrader.MaxWorkers)
	case f.maxSurge < 0 || f.maxSurge > f.workers:
		return o, usagef("--max-surge %d: want 1 to --workers (%d)", f.maxSurge, f.workers)
	case f.workers > 1 && o.Protocol != upgrader.ProtocolSystemd:
		return o, usagef("--workers %d with --protocol %s: a %s app runs one process per generation; several workers need --protocol systemd", f.workers, f.protocol, f.protocol)
	}
	o.Workers, o.MaxSurge = f.workers, f.maxSurge
	if err := f.selfHealing(&o); err != nil {
		return o, err
	}
	o.Subreaper = f.subreaper || os.Getpid() == 1
	o.Dir = f.dir
	if o.Dir == "" {
		// $PWD when it names the current directory, as the shell that
		// entered a symlink calls it, so that a reload enters it anew.
		o.Dir, _ = os.Getwd()
	}
	return o, nil
}

// afterDashes reports whether rest, what flag parsing left of args, came
// after a "--": the flag package stops at the first bare word as it does
// at "--", and drops the "--".
func afterDashes(args, rest []string) bool {
	parsed := args[:len(args)-len(rest)]
	return len(parsed) > 0 && parsed[len(parsed)-1] == "--"
}

// bareWord is the usage error for rest, what flag parsing left of args,
// when no "--" came before it: a true or false after a true/false flag,
// which takes its value only after "=", or else a word that is not a
// command.
func bareWord(fs *flag.FlagSet, args, rest []string) error {
	parsed := args[:len(args)-len(rest)]
	if word := rest[0]; len(parsed) > 0 && (word == "true" || word == "false") {
		name := strings.TrimLeft(parsed[len(parsed)-1], "-")
		if f := fs.Lookup(name); f != nil && !strings.Contains(name, "=") {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				return usagef("--%s %s: write --%s=%s; a true/false flag takes its value after =", name, word, name, word)
			}
		}
	}
	return notACommand(rest[0])
}

func (f *masterFlags) controlPath() string {
	if f.control == "" && f.pidfile != "" {
		return control.DefaultPath(f.pidfile)
	}
	return f.control
}

// openSockets takes each --listen socket from the service manager when it
// passed one (socket activation: by name, or else by address), and binds
// the others.
func openSockets(listen []string, log zerolog.Logger) ([]*sockets.Socket, error) {
	activated, err := sockets.Activated()
	if err != nil {
		return nil, err
	}
	var held []*sockets.Socket
	for i, raw := range listen {
		spec, _ := sockets.ParseSpec(raw, i) // checked in parse
		s := activated.Take(spec)
		if s == nil {
			if s, err = sockets.Bind(spec); err != nil {
				closeAll(held, log)
				activated.Close()
				return nil, err
			}
		}
		log.Info().Str("event", "listening").Str("name", spec.Name).Str("addr", s.Addr.String()).
			Str("network", s.Addr.Network()).Bool("activated", s.Activated).Msg("listening")
		held = append(held, s)
	}
	for _, s := range activated.Rest() {
		log.Warn().Str("event", "activated_unused").Str("name", s.Spec.Name).Str("addr", s.Addr.String()).
			Msg("closing a socket the service manager passed that no --listen names")
		s.Close()
	}
	return held, nil
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && (n > 0 || p == "0")
}

// masterSignals are the signals the master acts on.
func masterSignals() []syscall.Signal {
	return []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGTTIN, syscall.SIGTTOU}
}

func catchSignals() chan os.Signal {
	sigc := make(chan os.Signal, 8)
	for _, s := range masterSignals() {
		signal.Notify(sigc, s)
	}
	return sigc
}

// dispatcher turns signals to the master into requests to it, for as
// long as the process lives.
type dispatcher struct {
	sigc  <-chan os.Signal
	catch chan<- os.Signal
	drain chan chan struct{}
}

func newDispatcher(sigc chan os.Signal) *dispatcher {
	return &dispatcher{sigc: sigc, catch: sigc, drain: make(chan chan struct{})}
}

func (d *dispatcher) run(m *upgrader.Master) {
	for {
		select {
		case s := <-d.sigc:
			dispatch(m, s)
		case done := <-d.drain:
			for drained := false; !drained; {
				select {
				case s := <-d.sigc:
					dispatch(m, s)
				default:
					drained = true
				}
			}
			close(done)
		}
	}
}

// quiesce readies the signals for an in-place upgrade's exec: those that
// ask for a reload, a scale or a forward are ignored from now on (a Go
// program ends on a HUP that arrives before it asks for HUPs, and the new
// image asks for them within milliseconds of the exec), and every signal
// caught so far is passed on, for the master to hand over. A stop signal
// is not ignored: it ends a master caught in the exec, whose keeper then
// drains the workers. undo takes back the signals ignored here and those
// release reset.
func (d *dispatcher) quiesce() (undo func()) {
	signal.Ignore(missable...)
	d.passOn()
	return func() { signal.Notify(d.catch, append(missable, stops...)...) }
}

// release lets the stop signals end the process, for the last moments
// before an in-place upgrade's exec, and passes on those caught so far:
// the master calls the exec off for a stop asked for now, which its new
// image would not know of. One that arrives later ends the master, as it
// does during the exec, and the keeper drains the workers. quiesce's undo
// takes them back.
func (d *dispatcher) release() {
	// A stop signal the runtime has caught but os/signal not yet passed on
	// would be dropped by the reset: first a marker signal is sent to this
	// process and awaited. os/signal passes on what was caught before it
	// first (and, caught at once, the lower number first: INT, QUIT and
	// TERM are below SIGIO), so that, once the marker is in, every stop
	// signal caught so far is in d.catch.
	marker := make(chan os.Signal, 1)
	signal.Notify(marker, syscall.SIGIO)
	if syscall.Kill(os.Getpid(), syscall.SIGIO) == nil {
		select {
		case <-marker:
		case <-time.After(time.Second): // never seen: it is a bound
		}
	}
	signal.Reset(stops...)
	signal.Stop(marker)
	d.passOn()
}

// passOn dispatches every signal caught so far before it returns.
func (d *dispatcher) passOn() {
	done := make(chan struct{})
	d.drain <- done
	<-done
}

// stops are the signals that stop the master.
var stops = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT}

// missable are the signals an upgrade's exec may miss rather than die of.
var missable = []os.Signal{syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

func dispatch(m *upgrader.Master, s os.Signal) {
	switch s {
	case syscall.SIGHUP:
		m.Reload(upgrader.TriggerSignal)
	case syscall.SIGTTIN:
		m.ScaleBy(1)
	case syscall.SIGTTOU:
		m.ScaleBy(-1)
	case syscall.SIGTERM, syscall.SIGINT:
		m.Stop()
	case syscall.SIGQUIT:
		m.StopNow()
	default:
		m.Signal(s.(syscall.Signal))
	}
}

// closeAll closes the sockets; a unix socket file that cannot be removed
// is logged, since the next start must then remove it.
func closeAll(sockets []*sockets.Socket, log zerolog.Logger) {
	for _, s := range sockets {
		if err := s.Close(); err != nil {
			log.Warn().Str("event", "socket_left").Err(err).Str("name", s.Spec.Name).Msg("socket left behind")
		}
	}
}

// selfHealing checks the self-healing flags into o.
func (f *masterFlags) selfHealing(o *upgrader.Options) error {
	switch {
	// Below the floors no worker could ever satisfy them: every one would
	// be replaced as soon as it served, dozens a second, for good.
	case f.watchdog < 0 || f.watchdog > 0 && f.watchdog < minWatchdog:
		return usagef("--watchdog %s: want %s or more, or 0 for none", f.watchdog, minWatchdog)
	case f.maxAge < 0 || f.maxAge > 0 && f.maxAge < minMaxAge:
		return usagef("--max-age %s: want %s or more, or 0 for none", f.maxAge, minMaxAge)
	case f.probeEvery <= 0:
		return usagef("--probe-interval %s: want a positive duration", f.probeEvery)
	case f.probeFails < 1:
		return usagef("--probe-failures %d: want 1 or more", f.probeFails)
	case f.maxDraining < 0:
		return usagef("--max-draining %d: want 0 (no limit) or more", f.maxDraining)
	}
	o.Watchdog, o.MaxAge, o.ProbeInterval, o.ProbeFailures = f.watchdog, f.maxAge, f.probeEvery, f.probeFails
	o.MaxDraining = f.maxDraining
	if o.MaxDraining == 0 {
		o.MaxDraining = -1
	}
	if f.maxMemory != "" {
		n, err := parseSize(f.maxMemory)
		switch {
		case err != nil || n <= 0:
			return usagef("--max-memory %q: want a size such as 512MB or 2GB", f.maxMemory)
		case n < minMaxMemory:
			// A worker is bigger than that the moment it starts: it
			// would be replaced again and again. A unit left out.
			return usagef("--max-memory %q is %d bytes: want at least 1MB, such as 512MB or 2GB", f.maxMemory, n)
		}
		o.MaxMemory = n
	}
	if f.probe != "" {
		u, err := url.Parse(f.probe)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("--probe %q: want an http:// URL of the service, such as http://127.0.0.1:8080/healthz", f.probe)
		}
		o.Probe = f.probe
	}
	return nil
}

// The least --max-memory (no process runs in less), --watchdog (a worker
// pings at half of it) and --max-age.
const (
	minMaxMemory = 1 << 20
	minWatchdog  = 100 * time.Millisecond
	minMaxAge    = time.Second
)

// parseSize reads a size: a decimal number (a fraction allowed: 1.5GB)
// and a unit, K, M, G or T, with B, iB or nothing after it, in any case,
// a blank allowed between (512MB, 2 GiB, 1g), or no unit for bytes. The
// units are powers of 1024, as memory sizes are (systemd's MemoryMax=
// too). Anything else, such as an exponent, hex, NaN or a size beyond
// what an int64 holds, is an error.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := t[:len(t)-len(strings.TrimLeft(t, "0123456789."))]
	unit := strings.ToUpper(strings.TrimSpace(t[len(num):]))
	mult := map[string]float64{"": 1, "B": 1,
		"K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10,
		"M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
		"G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
		"T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}[unit]
	whole, frac, _ := strings.Cut(num, ".")
	if mult == 0 || whole == "" || strings.Contains(frac, ".") {
		return 0, fmt.Errorf("bad size %q", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(v * mult), nil
}
