//go:build linux

package host

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/proc"
)

// keeperLink is the master's side of its keeper (internal/keeper), the
// process that outlives the master to stop what it leaves running if it
// dies without a stop, SIGKILL included. It starts the keeper, tells it
// about every worker, stray and hook the master holds a pidfd for, and
// starts a new one, told everything anew, when the keeper dies (at once,
// or after 1 s doubling to 30 s if it died within a second) or stops
// reading: past maxKeeperQueue unsent messages it is killed and replaced.
//
// The loop (tell, forget), the reaper's hand-back of the keeper's exit and
// the restart timer all reach it, hence its one lock; it never blocks on
// the keeper, whose messages a writer goroutine sends.
type keeperLink struct {
	cfg  *Config
	kids *children

	mu     sync.Mutex
	known  map[int]keeperEntry // what a new keeper is told, by PID
	k      *keeperProc
	delay  time.Duration // before the next start, after one died young
	timer  *time.Timer
	failed bool // the last start failed: said once
	closed bool
	handed []int // the socket's duplicate handed over for an exec
	// handing is set from handOver to takeBack: no keeper may start
	// while the state that names the keeper is on its way to the exec.
	handing bool
}

// keeperEntry is one process the keeper is to know.
type keeperEntry struct {
	op  byte
	gen int
	// fds are the link's own copies of its pidfd and, for a worker whose
	// output is logged, of the read ends of its stdout and stderr pipes.
	fds []int
}

// maxKeeperQueue bounds the messages waiting for a keeper that does not
// read (SIGSTOPped, say). Half of them, those about a new process, hold a
// descriptor: 128 at most, where the open-file limit may be 1024. A keeper
// that reads keeps its queue near empty; 256 unsent messages are some 128
// worker starts and exits it has not read.
const maxKeeperQueue = 256

func newKeeperLink(cfg *Config, kids *children) *keeperLink {
	return &keeperLink{cfg: cfg, kids: kids, known: map[int]keeperEntry{}}
}

// start starts the keeper. If it cannot, it says why and tries again
// later.
func (l *keeperLink) start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.startLocked()
}

func (l *keeperLink) startLocked() {
	l.timer = nil
	if l.closed || l.k != nil || l.handing {
		return
	}
	k, err := l.newKeeper()
	if err != nil {
		if !l.failed {
			l.cfg.Log.Error().Str("event", "keeper_failed").Err(err).Msg("cannot start the keeper: nothing stops the workers if the master is killed; retrying")
		}
		l.failed = true
		l.retry()
		return
	}
	l.failed = false
	l.k = k
	pids := make([]int, 0, len(l.known))
	for pid := range l.known {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		e := l.known[pid]
		l.send(e.op, pid, e.gen, e.fds)
	}
	l.cfg.Log.Info().Str("event", "keeper_started").Int("pid", k.pid).Msg("keeper started")
}

// tell makes the keeper know process pid, with its pidfd and, for a
// worker, the read ends of its output pipes (see keeper.OpWorker).
func (l *keeperLink) tell(op byte, pid, gen, pidfd int, out ...int) {
	fds, err := dupFDs(append([]int{pidfd}, out...))
	if err != nil {
		l.cfg.Log.Error().Str("event", "keeper_tell_failed").Err(err).Int("pid", pid).Msg("cannot tell the keeper about a process")
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		closeFDs(fds)
		return
	}
	l.known[pid] = keeperEntry{op: op, gen: gen, fds: fds}
	l.send(op, pid, gen, fds)
}

// dupFDs duplicates fds, close-on-exec.
func dupFDs(fds []int) ([]int, error) {
	dups := make([]int, 0, len(fds))
	for _, fd := range fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeFDs(dups)
			return nil, err
		}
		dups = append(dups, d)
	}
	return dups, nil
}

// forget tells the keeper that pid is gone.
func (l *keeperLink) forget(pid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.known[pid]
	if !ok {
		return
	}
	delete(l.known, pid)
	closeFDs(e.fds)
	l.send(keeper.OpForget, pid, e.gen, nil)
}

// send queues a message for the running keeper, if any, with copies of
// fds; a new keeper is told everything when it starts.
func (l *keeperLink) send(op byte, pid, gen int, fds []int) {
	k := l.k
	if k == nil {
		return
	}
	m := keeperMsg{b: keeper.Msg{Op: op, PID: pid, Gen: gen}.Encode()}
	if len(fds) > 0 {
		dups, err := dupFDs(fds)
		if err != nil {
			l.cfg.Log.Error().Str("event", "keeper_tell_failed").Err(err).Int("pid", pid).Msg("cannot tell the keeper about a process")
			return
		}
		m.fds = dups
	}
	if !k.queue(m) {
		l.cfg.Log.Error().Str("event", "keeper_wedged").Int("pid", k.pid).Int("queued", maxKeeperQueue).
			Msg("the keeper is not reading (stopped?): killing it; a new one is told everything")
		proc.PidFD(k.pidfd).Signal(unix.SIGKILL)
	}
}

// exited starts a new keeper in place of k, which died.
func (l *keeperLink) exited(k *keeperProc, status syscall.WaitStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k.abandon()
	if l.closed {
		return // close reaps it and closes its pidfd
	}
	unix.Close(k.pidfd)
	if l.k != k {
		return
	}
	l.k = nil
	if time.Since(k.started) >= time.Second {
		l.delay = 0
	}
	l.cfg.Log.Warn().Str("event", "keeper_exited").Int("pid", k.pid).Str("how", DescribeExit(status)).Msg("keeper exited: starting a new one")
	if l.delay == 0 {
		l.delay = time.Second
		l.startLocked()
		return
	}
	l.retry()
}

func (l *keeperLink) retry() {
	if l.delay == 0 {
		l.delay = time.Second
	}
	d := l.delay
	l.delay = min(2*l.delay, 30*time.Second)
	l.timer = time.AfterFunc(d, l.start)
}

// close ends the keeper after a clean stop: the master has reaped
// everything and told it so, and the keeper, at end of file, exits without
// signalling anything. A keeper that does not exit within the drain
// timeout (stopped, say) is killed.
func (l *keeperLink) close() {
	l.mu.Lock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
	}
	for pid, e := range l.known {
		closeFDs(e.fds)
		delete(l.known, pid)
	}
	k := l.k
	l.k = nil
	l.mu.Unlock()
	if k == nil {
		return
	}
	deadline := time.Now().Add(l.cfg.DrainTimeout)
	k.finish(deadline) // everything told, then end of file
	select {
	case <-k.exited:
	case <-time.After(time.Until(deadline)):
		l.cfg.Log.Warn().Str("event", "keeper_stuck").Int("pid", k.pid).Msg("the keeper did not exit after the master's stop: killing it")
		proc.PidFD(k.pidfd).Signal(unix.SIGKILL)
		select {
		case <-k.exited:
		case <-time.After(5 * time.Second):
		}
	}
	unix.Close(k.pidfd)
}

func (l *keeperLink) newKeeper() (*keeperProc, error) {
	c := l.cfg
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("keeper socket: %w", err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	defer null.Close()
	format := c.LogFormat
	if format != "json" && format != "console" {
		format = "json"
		if _, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS); err == nil {
			format = "console"
		}
	}
	cfg := keeper.Config{DrainSignal: c.DrainSignal, DrainTimeout: c.DrainTimeout, DrainGroup: c.DrainGroup,
		LogJSON: format == "json", LogLevel: c.LogLevel}
	if c.Output != nil {
		cfg.OutputRate = c.Output.Rate
	}
	if self, err := proc.ReadStat(os.Getpid()); err == nil {
		cfg.Master, cfg.MasterStart = self.PID, self.StartTime
	}
	var env []string
	for _, kv := range os.Environ() {
		if len(kv) < len(envnames.Keeper)+1 || kv[:len(envnames.Keeper)+1] != envnames.Keeper+"=" {
			env = append(env, kv)
		}
	}
	pidfd := -1
	pid, exited, err := l.kids.fork(func() (int, error) {
		return syscall.ForkExec(c.ShimPath, []string{keeper.Comm}, &syscall.ProcAttr{
			Dir:   "/",
			Env:   append(env, envnames.Keeper+"="+cfg.String()),
			Files: []uintptr{null.Fd(), os.Stderr.Fd(), os.Stderr.Fd(), uintptr(fds[1])},
			// Its own process group: a signal to the master's group (a
			// supervisor's killasgroup, a terminal's ^C) must not reach it.
			Sys: &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd},
		})
	})
	unix.Close(fds[1])
	if err == nil && pidfd < 0 {
		syscall.Kill(pid, syscall.SIGKILL) // our unreaped child: the PID is its own
		err = errors.New("the kernel gave no pidfd for it (Linux 5.3+)")
	}
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("start %s as the keeper: %w", c.ShimPath, err)
	}
	f := os.NewFile(uintptr(fds[0]), "keeper")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		proc.PidFD(pidfd).Signal(unix.SIGKILL)
		unix.Close(pidfd)
		return nil, fmt.Errorf("keeper socket: %w", err)
	}
	k := &keeperProc{pid: pid, pidfd: pidfd, started: time.Now(), conn: fc.(*net.UnixConn),
		wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go k.write()
	go func() {
		ws := <-exited
		close(k.exited)
		l.exited(k, ws)
	}()
	return k, nil
}

// keeperProc is a running keeper and the master's end of its socket.
type keeperProc struct {
	pid, pidfd int
	started    time.Time
	conn       *net.UnixConn
	exited     chan struct{} // closed once it has been reaped

	mu      sync.Mutex
	pending []keeperMsg
	wake    chan struct{}
	closing bool
	broken  bool
	wedged  bool          // its queue filled up
	done    chan struct{} // the writer has returned
}

type keeperMsg struct {
	b    []byte
	fds  []int         // descriptors to pass along: a pidfd, and output pipes
	mark chan struct{} // not sent: closed once everything before it was (flush)
}

// queue adds m for the writer. It returns false the first time the queue
// is full: the keeper is wedged.
func (k *keeperProc) queue(m keeperMsg) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.broken || k.closing:
		closeMsgs([]keeperMsg{m})
		return true
	case len(k.pending) >= maxKeeperQueue:
		closeMsgs([]keeperMsg{m})
		wedged := !k.wedged
		k.wedged = true
		return !wedged
	}
	k.pending = append(k.pending, m)
	k.poke()
	return true
}

// write sends the queued messages in order until finish or abandon.
func (k *keeperProc) write() {
	defer close(k.done)
	for {
		k.mu.Lock()
		for len(k.pending) == 0 && !k.closing && !k.broken {
			k.mu.Unlock()
			<-k.wake
			k.mu.Lock()
		}
		q := k.pending
		k.pending = nil
		stop := k.broken || len(q) == 0 // abandoned, or finishing with nothing left
		k.mu.Unlock()
		if stop {
			closeMsgs(q)
			return
		}
		for i, m := range q {
			if m.mark != nil {
				close(m.mark)
				continue
			}
			var oob []byte
			if len(m.fds) > 0 {
				oob = unix.UnixRights(m.fds...)
			}
			if _, _, err := k.conn.WriteMsgUnix(m.b, oob, nil); err != nil {
				// The keeper is gone, stopped past the deadline, or abandoned.
				closeMsgs(q[i:])
				k.abandon()
				return
			}
			closeMsgs(q[i : i+1])
		}
	}
}

// finish sends what is queued, waiting until deadline at most, then closes
// the socket: end of file for the keeper.
func (k *keeperProc) finish(deadline time.Time) {
	k.conn.SetWriteDeadline(deadline)
	k.mu.Lock()
	k.closing = true
	k.mu.Unlock()
	k.poke()
	<-k.done
	k.conn.Close()
}

// abandon drops what is queued for a keeper that died, and the socket.
func (k *keeperProc) abandon() {
	k.mu.Lock()
	k.broken = true
	closeMsgs(k.pending)
	k.pending = nil
	k.mu.Unlock()
	k.poke()
	k.conn.Close()
}

func (k *keeperProc) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func closeMsgs(ms []keeperMsg) {
	for _, m := range ms {
		closeFDs(m.fds)
	}
}
