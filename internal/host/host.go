//go:build linux

// Package host is the operating-system side of baton's master: it
// resolves the worker program of a release, starts worker processes with
// the sockets and their protocol's environment, holds a pidfd for each
// and signals only through them, reaps every child, receives each
// worker's sd_notify messages on a socket of its own, watches for
// readiness (--ready accepting, a protocol's own channel), reads each
// worker's output pipes into the log (Config.Output), watches the process
// group of a worker whose main process has exited, finds the processes
// the master adopts, binds lost sockets anew (CheckSockets), runs hooks,
// probes the service and measures a worker's memory (health.go), keeps
// the keeper (internal/keeper) informed, and talks to the master's own
// service manager. For an in-place upgrade it runs the new binary's
// check, hands its own state over, executes the new image, and in that
// image takes everything back (upgrade.go).
//
// A Host owns no lifecycle: upgrader's loop decides, a Host does, and what
// it learns later reaches the loop through Events. Every method of Host is
// called from that one loop goroutine; the goroutines a Host runs (see
// upgrader's doc for the map) report through Events only.
package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/accepting"
	"github.com/baton-sh/baton/internal/envfile"
	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/proc"
	"github.com/baton-sh/baton/internal/runas"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/internal/workerlog"
	"github.com/baton-sh/baton/notify"
)

// Config is what a Host needs to know, fixed for its life.
type Config struct {
	// Command is the worker's argv; Command[0] is looked up at each
	// Resolve. Dir is its working directory as a path (empty: the
	// master's).
	Command []string
	Dir     string
	// Env is the base environment of workers and hooks.
	Env []string
	// Identity, when set, is who workers, hooks and the parent stub run
	// as (not the keeper): their credentials, and HOME, USER, LOGNAME
	// and SHELL over Env. Their notify sockets are reachable by it alone.
	Identity *runas.Identity
	// Environment is applied over Env (and Identity's variables) each
	// time Resolve makes a release: its files are read anew then.
	Environment envfile.Environment
	// Umask, when set, is the umask workers and hooks start with (the
	// exec shim sets it); nil: the master's.
	Umask    *int
	Sockets  []*sockets.Socket
	Protocol Protocol
	// WatchAccepting watches every starting worker for a process waiting
	// for connections on a passed socket (--ready accepting).
	WatchAccepting bool
	DrainSignal    syscall.Signal
	DrainTimeout   time.Duration
	DrainGroup     bool
	Subreaper      bool
	// ShimPath is the baton binary re-executed as the exec shim, the
	// parent stub and the keeper.
	ShimPath string
	// Stdout and Stderr are the workers' fds 1 and 2, unless Output is
	// set: then each line a worker writes to either is a log event
	// written to Output.Out (see internal/workerlog and output.go).
	Stdout, Stderr *os.File
	Output         *workerlog.Config
	HookTimeout    time.Duration
	Log            zerolog.Logger
	// LogFormat and LogLevel are the master's, for the keeper.
	LogFormat, LogLevel string
	// ServiceNotify is the master's own NOTIFY_SOCKET, or empty.
	ServiceNotify string
	// Watchdog, when positive, is given to every worker as WATCHDOG_USEC
	// (and WATCHDOG_PID, set by the exec shim to the worker's own PID).
	Watchdog time.Duration
}

// Events receives what a Host learns. Its methods are called from the
// Host's goroutines and must hand the news on without waiting long.
type Events interface {
	// ChildExited: a child was reaped: a worker's main process, a stray,
	// or an orphan. Hooks and the keeper are the Host's own and not
	// reported.
	ChildExited(pid int, status syscall.WaitStatus)
	// Notified: worker pid's notify socket received d.
	Notified(pid int, d notify.Datagram)
	// Ready: worker pid was seen ready outside its notify socket.
	Ready(pid int, how string)
	// GroupEmpty: the process group of worker pid, whose main process had
	// exited (MainExited with keep), has no live member left.
	GroupEmpty(pid int)
	// HookDone: a hook has ended.
	HookDone(r HookResult)
}

// Release is what a generation runs: its program, working directory and
// environment, resolved once when the generation is made, so that every
// worker of it runs the same files with the same variables even after a
// deploy moves a "current" symlink or edits an environment file.
type Release struct {
	Path string   // the program, symbolic links resolved
	Argv []string // its argv; Argv[0] as the user wrote it
	Dir  string   // the working directory, symbolic links resolved; "" for the master's
	// Env is the workers' environment before baton's own variables:
	// Config.Env, Identity's variables, then Config.Environment.
	Env []string
}

// Start is one worker to start.
type Start struct {
	Generation, Index, Workers int
	Release                    Release
	Watchdog                   time.Duration // set by the Host from its Config
}

// Host is the running OS side of a master.
type Host struct {
	cfg    Config
	ev     Events
	self   int
	base   []string // Config.Env with Identity's variables
	cred   *syscall.Credential
	stop   chan struct{}
	spawn  *spawner
	kids   *children // hooks and the keeper, reaped apart from the rest
	keeper *keeperLink
	notify *notify.Dir
	socks  *accepting.Sockets // the held sockets, by inode
	proto  protocol
	null   *os.File
	hooks  *hookRunner
	// outputs read the workers' output pipes (Config.Output); a reader
	// outlives its worker until its pipe's end of file.
	outputs *outputReaders
	// procs are the workers and strays the loop knows, by PID: what the
	// Host holds for each. Only the loop's goroutine touches it.
	procs   map[int]*held
	noPidfd bool
	// reaperDone is closed when the reaper has stopped (see HandOver);
	// handed holds the duplicates HandOver made until the exec.
	reaperDone chan struct{}
	handed     []int
	// keepAliveFailing: the last watchdog keep-alive to the service
	// manager was dropped, and said so; the next ones are dropped quietly
	// until one gets through. Only the loop's goroutine touches it.
	keepAliveFailing bool
}

// held is a worker or a stray, and what the Host holds for it.
type held struct {
	pid     int
	fd      int // its pidfd
	worker  bool
	handoff *handoff
	notify  *notify.Socket
	watch   context.CancelFunc // --ready accepting, while it starts
	group   *groupWatch        // its group watch, once its main process exited
}

// New makes the Host of a master: the subreaper flag, the notify
// directory, the reaper, the keeper. ev hears from it until Close.
func New(cfg Config, ev Events) (*Host, error) {
	if cfg.Subreaper {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("cannot become a subreaper: %w", err)
		}
	}
	h, err := newHost(cfg, ev, notify.NewDir)
	if err != nil {
		return nil, err
	}
	h.logIdentity()
	if fd, err := unix.PidfdOpen(h.self, 0); err != nil {
		h.noPidfd = true
		cfg.Log.Warn().Str("event", "no_pidfd").Err(err).Msg("this kernel has no pidfds (Linux 5.3+): processes left by workers are not tracked, and nothing stops the workers if the master is killed")
	} else {
		unix.Close(fd)
		h.keeper = newKeeperLink(&h.cfg, h.kids)
		h.keeper.start()
	}
	go h.reap()
	return h, nil
}

// newHost makes what New and Resume share: the worker environment and
// credentials, the notify directory (made by dir), the sockets' identity.
// The reaper and the keeper are theirs to start.
func newHost(cfg Config, ev Events, dir func(...notify.Option) (*notify.Dir, error)) (*Host, error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	base := cfg.Env
	var cred *syscall.Credential
	var reach []notify.Option
	if id := cfg.Identity; id != nil {
		base, cred = id.Env(base), id.Credential()
		reach = append(reach, notify.ReachableBy(id.UID, id.GID))
	}
	d, err := dir(reach...)
	if err != nil {
		null.Close()
		return nil, err
	}
	h := &Host{
		cfg: cfg, ev: ev, self: os.Getpid(), stop: make(chan struct{}), reaperDone: make(chan struct{}), base: base, cred: cred,
		spawn: newSpawner(), kids: newChildren(), notify: d, null: null,
		proto: newProtocol(cfg.Protocol, cfg.DrainSignal),
		procs: map[int]*held{}, outputs: newOutputReaders(),
	}
	h.hooks = &hookRunner{h: h, running: -1}
	if err := h.knowSockets(); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// reap runs the reaper until h.stop is closed.
func (h *Host) reap() {
	defer close(h.reaperDone)
	reap(h.kids, h.ev.ChildExited, h.stop)
}

// Close ends the Host after the loop has ended: every worker has been
// reaped. The keeper, told nothing is left, exits. The workers' output
// is read to its end, waiting outputDrain at most.
func (h *Host) Close() {
	select {
	case <-h.stop: // handed over for an exec that did not happen
		h.TakeBack()
	default:
	}
	if h.keeper != nil {
		h.keeper.close()
	}
	for _, p := range h.procs {
		h.release(p)
	}
	h.outputs.close()
	close(h.stop)
	h.spawn.close()
	h.notify.Close()
	h.null.Close()
}

// Resolve makes the release a new generation runs from what is on disk
// now: the environment, with every environment file read anew, then the
// program, looked up in that environment's PATH, and the directory. A
// missing or malformed environment file is an error naming it (and the
// line); an assignment of a variable of baton's is left out with a
// warning in the log.
func (h *Host) Resolve() (Release, error) {
	c := &h.cfg
	env, err := h.environment("workers")
	if err != nil {
		return Release{}, err
	}
	path, err := resolveCommand(c.Command[0], c.Dir, env)
	if err != nil {
		return Release{}, err
	}
	rel := Release{Argv: c.Command, Env: env}
	if rel.Path, err = filepath.EvalSymlinks(path); err != nil {
		return Release{}, fmt.Errorf("worker command %s: %w", c.Command[0], err)
	}
	if c.Dir != "" {
		if rel.Dir, err = filepath.EvalSymlinks(c.Dir); err != nil {
			return Release{}, fmt.Errorf("working directory: %w", err)
		}
	}
	return rel, nil
}

// StartWorker starts a worker through the exec shim, in its own process
// group, with a notify socket of its own.
func (h *Host) StartWorker(s Start) (int, error) {
	c := &h.cfg
	rel := s.Release
	if err := executable(rel.Path); err != nil {
		return 0, fmt.Errorf("worker command %s (%s): %w; the release this generation was started from is gone", rel.Argv[0], rel.Path, err)
	}
	if rel.Dir != "" {
		if _, err := os.Stat(rel.Dir); err != nil {
			return 0, fmt.Errorf("working directory: %w; the release this generation was started from is gone", err)
		}
	}
	sock, err := h.notify.Listen()
	if err != nil {
		return 0, err
	}
	if sock.Path() != "" && h.notify.Moved() {
		c.Log.Warn().Str("event", "notify_dir_replaced").Str("dir", h.notify.Path()).
			Msg("the notify socket's directory was deleted (a temp-file cleaner?): made a new one; workers already running cannot reach baton until they are replaced. Set XDG_RUNTIME_DIR, or RuntimeDirectory= under systemd, to a directory no cleaner touches")
	}
	s.Watchdog = c.Watchdog
	hand, err := h.proto.handoff(s, c.Sockets, sock.Path())
	if err != nil {
		sock.Close()
		return 0, err
	}
	shim := sockets.ShimVar(rel.Path)
	if hand.stub {
		shim = stubEnv + "=" + rel.Path
	}
	// A stub starts the app through the exec shim with this environment,
	// so the app gets the umask too.
	env := h.withUmask(append(hand.env, shim))
	files := []uintptr{h.null.Fd(), c.Stdout.Fd(), c.Stderr.Fd()}
	var out *outputPipes
	if c.Output != nil {
		if out, err = newOutputPipes(h.cred); err != nil {
			sock.Close()
			return 0, err
		}
		files[1], files[2] = uintptr(out.w[0]), uintptr(out.w[1])
	}
	for _, f := range hand.files {
		files = append(files, f.Fd())
	}
	pidfd := -1
	pid, err := h.spawn.start(c.ShimPath, rel.Argv, &syscall.ProcAttr{
		Dir:   rel.Dir,
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Credential: h.cred,
			// Its own group, so a drain timeout can kill the worker
			// together with everything it started.
			Setpgid: true,
			// If the master dies, the worker is told to drain and exit;
			// the keeper sees to the rest.
			Pdeathsig: c.DrainSignal,
			PidFD:     &pidfd,
		},
	})
	if hand.started != nil {
		hand.started(pid, func(pid int) { h.ev.Ready(pid, "ready by "+c.Protocol.String()) })
	}
	if out != nil {
		out.closeWrite() // the worker's now, and what it starts
	}
	if err != nil {
		sock.Close()
		if out != nil {
			out.close()
		}
		return 0, h.startError(rel.Path, rel.Dir, err)
	}
	p := &held{pid: pid, fd: pidfd, worker: true, handoff: hand, notify: sock}
	h.procs[pid] = p
	if pidfd >= 0 && h.keeper != nil {
		// The keeper holds the read ends of the output pipes too: if the
		// master is killed, it reads them while the workers drain, which
		// would otherwise die of SIGPIPE at their next line.
		var outFDs []int
		if out != nil {
			if outFDs, err = out.readFDs(); err != nil {
				c.Log.Error().Str("event", "keeper_pipes_failed").Err(err).Int("pid", pid).Msg("cannot give the keeper the worker's output pipes: if the master is killed, the worker's next line kills it (SIGPIPE)")
			}
		}
		h.keeper.tell(keeper.OpWorker, pid, s.Generation, pidfd, outFDs...)
		closeFDs(outFDs)
	}
	if out != nil {
		h.startOutput(out, workerlog.Source{Gen: s.Generation, Index: s.Index, PID: pid})
	}
	go h.receive(pid, sock)
	if c.WatchAccepting {
		ctx, cancel := context.WithCancel(context.Background())
		p.watch = cancel
		// Read here: CheckSockets replaces h.socks on the loop meanwhile.
		socks := h.socks
		go func() {
			w, err := accepting.Wait(ctx, pid, socks, 0)
			switch {
			case err == nil:
				h.ev.Ready(pid, "accepting: "+w.String())
			case ctx.Err() == nil:
				c.Log.Warn().Str("event", "accept_watch_failed").Err(err).Int("pid", pid).Msg("cannot watch the new worker for --ready accepting: it becomes ready only by READY=1")
			}
		}()
	}
	return pid, nil
}

// receive passes sock's datagrams on as worker pid's until sock is closed.
func (h *Host) receive(pid int, sock *notify.Socket) {
	for {
		d, err := sock.Receive()
		if err != nil {
			return
		}
		h.ev.Notified(pid, d)
	}
}

// knowSockets identifies the held sockets by inode, for --ready accepting
// and the hint to use it. It replaces h.socks, never changes it: watchers
// already running keep the set they were given.
func (h *Host) knowSockets() error {
	conns := make([]syscall.Conn, len(h.cfg.Sockets))
	for i, sock := range h.cfg.Sockets {
		conns[i] = sock.File
	}
	socks, err := accepting.NewSockets(conns...)
	if err != nil {
		return fmt.Errorf("identifying the sockets: %w", err)
	}
	h.socks = socks
	return nil
}

// Settled stops looking for worker pid's readiness.
func (h *Host) Settled(pid int) {
	if p := h.procs[pid]; p != nil && p.watch != nil {
		p.watch()
		p.watch = nil
	}
}

// Signal sends sig to process pid through its pidfd, and with group to the
// process group it leads too: through the pidfd as well where the kernel
// allows it (Linux 6.9+), so a signal can never reach a group or process
// that has taken over the number. A worker that has left its own group is
// still reached, as its main process gets the signal directly. A signal
// to the main process of a protocol with a parent stub goes through the
// stub's pipe.
func (h *Host) Signal(pid int, sig syscall.Signal, group bool) error {
	p := h.procs[pid]
	if p == nil {
		return syscall.ESRCH
	}
	if !group && p.handoff != nil && p.handoff.signal != nil {
		return p.handoff.signal(sig)
	}
	var err error
	if p.fd >= 0 {
		err = proc.PidFD(p.fd).Signal(unix.Signal(sig))
	} else if !p.worker {
		return syscall.ESRCH
	}
	if !group {
		if p.fd < 0 {
			return syscall.Kill(pid, sig) // no pidfds: an unreaped child of ours
		}
		return err
	}
	return h.signalGroup(p, sig)
}

// signalGroup signals the process group p leads.
func (h *Host) signalGroup(p *held, sig syscall.Signal) error {
	if p.fd >= 0 {
		err := proc.PidFD(p.fd).SignalGroup(unix.Signal(sig))
		if !errors.Is(err, proc.ErrNoGroupSignal) {
			return err
		}
	}
	// Kernels before 6.9: by number. The group keeps its number while it
	// has a member, and the main process is ours until reaped.
	return syscall.Kill(-p.pid, sig)
}

// MainExited handles the reap of worker pid's main process. It stops
// watching its readiness, ends what its protocol held, and lists the
// processes left in its process group: with keep, it watches them and
// reports GroupEmpty once none is left; without, it kills them.
func (h *Host) MainExited(pid int, keep bool) []string {
	p := h.procs[pid]
	if p == nil {
		return nil
	}
	h.Settled(pid)
	if hd := p.handoff; hd != nil {
		if hd.release != nil {
			hd.release()
		}
		if hd.done != nil {
			hd.done()
		}
	}
	// Most groups end with their main process: one signal 0 says so
	// without reading every process's stat on the host, which costs the
	// master more the busier the host is.
	if errors.Is(h.signalGroup(p, 0), syscall.ESRCH) {
		return nil
	}
	left := proc.LiveGroup(pid)
	if len(left) == 0 {
		return nil
	}
	names := make([]string, len(left))
	for i, m := range left {
		names[i] = m.String()
	}
	if keep {
		g, err := watchGroup(pid, func() { h.ev.GroupEmpty(pid) })
		if err == nil {
			p.group = g
			return names
		}
		h.cfg.Log.Error().Str("event", "group_watch_failed").Err(err).Int("pid", pid).Msg("cannot watch the worker's process group: killing it")
	}
	// Killed whatever the scan saw: a member forked since is a member too.
	h.signalGroup(p, syscall.SIGKILL)
	return names
}

// Forget drops worker or stray pid, gone for good: its pidfd, its notify
// socket, and the keeper's knowledge of it.
func (h *Host) Forget(pid int) {
	if p := h.procs[pid]; p != nil {
		delete(h.procs, pid)
		h.release(p)
	}
}

func (h *Host) release(p *held) {
	if p.watch != nil {
		p.watch()
	}
	if p.group != nil {
		p.group.stop()
	}
	if p.notify != nil {
		p.notify.Close()
	}
	if p.fd >= 0 {
		if h.keeper != nil {
			h.keeper.forget(p.pid)
		}
		unix.Close(p.fd)
		p.fd = -1
	}
}

// TookOver tells worker pid's protocol that it serves and what it
// replaced is gone.
func (h *Host) TookOver(pid int) {
	if p := h.procs[pid]; p != nil && p.handoff != nil && p.handoff.release != nil {
		p.handoff.release()
	}
}

// Accepting reports a process of worker pid seen waiting for connections
// on a passed socket, and how; 0 if none.
func (h *Host) Accepting(pid int) (int, string) {
	if len(h.cfg.Sockets) == 0 {
		return 0, ""
	}
	w, found, _ := accepting.Check(pid, h.socks)
	if !found {
		return 0, ""
	}
	return w.PID, w.String()
}

// LostSocket is a held socket CheckSockets found unreachable.
type LostSocket struct {
	Name string
	// Path is the file of a unix socket found deleted or replaced; empty
	// when the socket itself stopped listening (a worker shut it down).
	Path string
	// Err says why binding it anew failed; nil: it was bound anew.
	Err error
}

// CheckSockets finds the held sockets nothing can reach any more: one
// that stopped listening (a worker shut it down: shutdown(2) on its
// inherited copy acts on the one socket every generation shares), and a
// unix socket whose file was deleted or replaced. It binds each anew at
// its address, a unix socket at its path with its mode, in place of the
// old one, and lists them. It costs one getsockopt per socket and one
// lstat per unix socket file baton created; it binds only what was lost.
func (h *Host) CheckSockets() []LostSocket {
	var lost []LostSocket
	rebound := false
	for _, sock := range h.cfg.Sockets {
		l := LostSocket{Name: sock.Spec.Name}
		switch {
		case !sock.Listening():
		case !sock.FileIntact():
			l.Path = sock.Spec.Address
		default:
			continue
		}
		if l.Err = sock.Rebind(); l.Err == nil {
			rebound = true
		}
		lost = append(lost, l)
	}
	if rebound {
		if err := h.knowSockets(); err != nil {
			h.cfg.Log.Warn().Str("event", "accept_watch_failed").Err(err).Msg("cannot identify the sockets bound anew: --ready accepting sees new workers only by READY=1")
		}
	}
	return lost
}

// Stopping tells the Host a stop began; fast kills the running hook.
func (h *Host) Stopping(fast bool) {
	if fast {
		h.hooks.kill()
	}
}

// ServiceState is what the master tells its own service manager.
// Watchdog alone is a keep-alive: WATCHDOG=1 and nothing else.
type ServiceState struct {
	Ready, Reloading, Stopping, Watchdog bool
	Status                               string
}

// TellService sends st to the master's own service manager, with
// MONOTONIC_USEC on RELOADING=1, which systemd compares with the time it
// sent SIGHUP to match the reload to its request.
func (h *Host) TellService(st ServiceState) {
	if h.cfg.ServiceNotify == "" {
		return
	}
	var msg string
	switch {
	case st.Watchdog:
		// One line per run of failures: a manager that stopped reading
		// would otherwise get one every half interval until it kills
		// baton, or forever if it only stopped watching.
		err := notify.SendTo(h.cfg.ServiceNotify, "WATCHDOG=1")
		if err != nil && !h.keepAliveFailing {
			h.cfg.Log.Warn().Str("event", "service_notify_failed").Err(err).Msg("cannot send the service manager's watchdog its keep-alive (said once until one gets through)")
		}
		h.keepAliveFailing = err != nil
		return
	case st.Reloading:
		msg = "RELOADING=1\nMONOTONIC_USEC=" + monotonicUsec() + "\n"
	case st.Ready:
		msg = "READY=1\n"
	case st.Stopping:
		msg = "STOPPING=1\n"
	}
	msg += "STATUS=" + st.Status
	if err := notify.SendTo(h.cfg.ServiceNotify, msg); err != nil {
		h.cfg.Log.Warn().Str("event", "service_notify_failed").Err(err).Msg("cannot notify the service manager")
	}
}

func monotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return strconv.FormatInt(ts.Nano()/1000, 10)
}
