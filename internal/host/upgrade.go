//go:build linux

package host

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/proc"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/notify"
)

// An in-place upgrade re-executes the master's binary in the master's own
// process (execve: same PID, same children). Everything the Host holds
// crosses the exec as open descriptors, described by State: every
// worker's and stray's pidfd and notify socket, the keeper's pidfd and
// socket, the read end of every worker output pipe still being read.
// Children that exit meanwhile stay zombies for the new image's reaper,
// datagrams stay queued in their sockets, and worker output in its pipes
// (a worker whose pipe fills waits the few milliseconds of the exec); a
// line half read is handed over with its pipe, so that no line is lost,
// split or logged twice.

// State is what a Host hands to its own new image.
type State struct {
	Notify notify.DirState `json:"notify"`
	Keeper *KeeperState    `json:"keeper,omitempty"`
	Procs  []ProcState     `json:"procs"`
	// Outputs are the streams of worker output being read: apart from
	// Procs, as a stream may outlive its worker (a process it started
	// still writes).
	Outputs []OutputState `json:"outputs,omitempty"`
}

// KeeperState is the running keeper.
type KeeperState struct {
	PID     int       `json:"pid"`
	PIDFD   int       `json:"pidfd"`
	ConnFD  int       `json:"conn_fd"`
	Started time.Time `json:"started"`
}

// ProcState is a worker or a stray the Host holds.
type ProcState struct {
	PID        int    `json:"pid"`
	FD         int    `json:"fd"`
	Worker     bool   `json:"worker,omitempty"`
	Generation int    `json:"generation,omitempty"`
	NotifyFD   int    `json:"notify_fd,omitempty"`
	NotifyPath string `json:"notify_path,omitempty"`
}

// HandOver readies the Host for the exec of an in-place upgrade and
// describes what it holds: it stops the reaper, so that children exiting
// from now on wait for the new image, stops reading worker output once
// what was read is logged, and sends the keeper what is queued for it
// (and starts none meanwhile). gens gives each worker's and stray's
// generation, for the keeper. It returns the descriptors the exec must keep open. Until the
// exec, or TakeBack after it failed, the Host reaps nothing.
func (h *Host) HandOver(gens map[int]int) (State, []int, error) {
	close(h.stop)
	<-h.reaperDone
	st := State{Notify: h.notify.Carry()}
	var keep []int
	if h.keeper != nil {
		ks, fds, err := h.keeper.handOver()
		if err != nil {
			h.TakeBack()
			return State{}, nil, err
		}
		st.Keeper, keep = ks, append(keep, fds...)
	}
	h.handed = nil
	for _, p := range h.procs {
		ps := ProcState{PID: p.pid, FD: p.fd, Worker: p.worker, Generation: gens[p.pid], NotifyFD: -1}
		if p.fd >= 0 {
			keep = append(keep, p.fd)
		}
		if p.notify != nil {
			fd, err := sockets.Dup(p.notify)
			if err != nil {
				h.TakeBack()
				return State{}, nil, fmt.Errorf("notify socket of worker %d: %w", p.pid, err)
			}
			h.handed = append(h.handed, fd)
			ps.NotifyFD, ps.NotifyPath = fd, p.notify.Path()
			keep = append(keep, ps.NotifyFD)
		}
		st.Procs = append(st.Procs, ps)
	}
	outs, fds := h.outputs.stop()
	st.Outputs, keep = outs, append(keep, fds...)
	return st, keep, nil
}

// TakeBack undoes HandOver after the exec failed: the reaper and the
// readers of worker output run again.
func (h *Host) TakeBack() {
	for _, fd := range h.handed {
		unix.Close(fd)
	}
	h.handed = nil
	h.stop, h.reaperDone = make(chan struct{}), make(chan struct{})
	go h.reap()
	h.outputs.resume()
	if h.keeper != nil {
		h.keeper.takeBack()
	}
}

// exec replaces the master's image with path, argv and env, keeping the
// descriptors keep open; name is what its error calls the binary. It
// runs on the spawner's thread, the one every worker was forked from: the
// other threads end at the exec, and a worker's parent-death signal
// follows the thread that forked it. It returns only if the exec failed,
// with every change undone.
//
// A signal cannot be held pending for the new image: a Go program
// unblocks SIGHUP, SIGINT and SIGTERM as it starts, before it has a
// handler, so one pending then would take its default action and end the
// master. The caller sets the signals it can afford to miss to be ignored
// instead (see UpgradeOptions.Quiesce in upgrader).
func (h *Host) exec(path, name string, argv, env []string, keep []int) error {
	return h.spawn.run(func() error {
		for _, fd := range keep {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
		}
		err := syscall.Exec(path, argv, env)
		for _, fd := range keep {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
		return fmt.Errorf("exec %s: %w", name, err)
	})
}

// Image is the new binary of an in-place upgrade, opened once: its check
// run and its exec both execute this very file, whatever is at its path
// meanwhile, so that the binary executed is always the one checked. A
// deploy that puts another file at the path after the check does not
// change what runs; one that rewrites this file in place fails the exec
// (ExecImage) instead of running what was not checked.
type Image struct {
	fd   int
	path string
	st   unix.Stat_t
}

// OpenImage opens the binary at path for an in-place upgrade.
func OpenImage(path string) (*Image, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	img := &Image{fd: fd, path: path}
	if err := unix.Fstat(fd, &img.st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	return img, nil
}

// Path is the path the image was opened from.
func (img *Image) Path() string { return img.path }

// Close lets the image go. A nil Image is closed.
func (img *Image) Close() {
	if img != nil && img.fd >= 0 {
		unix.Close(img.fd)
		img.fd = -1
	}
}

// whyNotRun explains err, from executing img, where the kernel's word
// misleads: ENOENT for a file that is there means that what it needs to
// run is not, its ELF interpreter (the dynamic loader: a dynamically
// linked baton copied into an image without libc) or its #! interpreter.
func (img *Image) whyNotRun(err error) error {
	if !errors.Is(err, syscall.ENOENT) {
		return err
	}
	if f, ferr := elf.Open(imageAt(img.fd)); ferr == nil {
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b, _ := io.ReadAll(io.LimitReader(p.Open(), 4096))
				return fmt.Errorf("%s cannot run here: its dynamic loader %s is missing; use a statically linked baton (CGO_ENABLED=0 go build)",
					img.path, strings.TrimRight(string(b), "\x00"))
			}
		}
		return err
	}
	if f, ferr := os.Open(imageAt(img.fd)); ferr == nil {
		defer f.Close()
		head := make([]byte, 256)
		n, _ := f.Read(head)
		if line, _, _ := strings.Cut(string(head[:n]), "\n"); strings.HasPrefix(line, "#!") {
			interp, _, _ := strings.Cut(strings.TrimSpace(line[2:]), " ")
			return fmt.Errorf("%s cannot run here: its interpreter %s is missing", img.path, interp)
		}
	}
	return err
}

// imageAt is where a process finds the image open as its descriptor fd.
func imageAt(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// Changed says, as an error, whether the file was written to since it
// was opened (its size or modification time changed; not its change
// time, which its path being removed or replaced changes too).
func (img *Image) Changed() error {
	var st unix.Stat_t
	if err := unix.Fstat(img.fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", img.path, err)
	}
	if st.Size != img.st.Size || st.Mtim != img.st.Mtim {
		return errors.New("it was written to since its check began: ask for the upgrade again once it is in place")
	}
	return nil
}

// CheckRun runs img (argv, env) to its end beside the loop, with stdin as
// its input, and reports its standard output, or why it failed: it could
// not start, it exited other than with 0 (with what it said on stderr),
// or it ran past timeout and was killed. timeout bounds the whole run,
// reading its output included: a process the check left outside its
// group that still holds the output fails the check when the time is up,
// instead of holding the upgrade (and the reloads queued behind it)
// forever. It is the check of an in-place upgrade's new binary, before
// anything is handed over.
// The check process has img as its descriptor 3.
func (h *Host) CheckRun(img *Image, argv, env []string, stdin []byte, timeout time.Duration, done func(stdout string, err error)) {
	go func() { done(h.checkRun(img, argv, env, stdin, timeout)) }()
}

// checkOutputMax bounds what is kept of a check run's stdout and stderr.
const checkOutputMax = 64 << 10

func (h *Host) checkRun(img *Image, argv, env []string, stdin []byte, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	in, inW, err := os.Pipe()
	if err != nil {
		return "", err
	}
	outR, out, err := os.Pipe()
	if err != nil {
		in.Close()
		inW.Close()
		return "", err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		in.Close()
		inW.Close()
		outR.Close()
		out.Close()
		return "", err
	}
	pidfd := -1
	pid, exited, err := h.kids.fork(func() (int, error) {
		// The image is the child's fd 3, open across its exec: a script
		// reads itself from there.
		return syscall.ForkExec(imageAt(3), argv, &syscall.ProcAttr{
			Env:   env,
			Files: []uintptr{in.Fd(), out.Fd(), errW.Fd(), uintptr(img.fd)},
			Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, PidFD: &pidfd},
		})
	})
	in.Close()
	out.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return "", img.whyNotRun(err)
	}
	defer unix.Close(pidfd)
	if k := h.keeper; k != nil {
		// If the master dies meanwhile, the keeper stops the check's
		// group: its own parent-death signal ends the check process,
		// not what it started.
		k.tell(keeper.OpWorker, pid, 0, pidfd)
		defer k.forget(pid)
	}
	go func() {
		inW.SetWriteDeadline(deadline)
		inW.Write(stdin)
		inW.Close()
	}()
	type output struct {
		text string
		open bool // still held open at the deadline
	}
	collect := func(r *os.File) <-chan output {
		c := make(chan output, 1)
		go func() {
			defer r.Close()
			r.SetReadDeadline(deadline)
			var b bytes.Buffer
			buf := make([]byte, 4096)
			for {
				n, err := r.Read(buf)
				b.Write(buf[:min(n, max(checkOutputMax-b.Len(), 0))])
				if err != nil {
					c <- output{b.String(), errors.Is(err, os.ErrDeadlineExceeded)}
					return
				}
			}
		}()
		return c
	}
	stdout, stderr := collect(outR), collect(errR)
	var ws syscall.WaitStatus
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case ws = <-exited:
	case <-timer.C:
		proc.PidFD(pidfd).SignalGroup(unix.SIGKILL)
		proc.PidFD(pidfd).Signal(unix.SIGKILL)
		<-exited
		return "", fmt.Errorf("it did not answer within %s", timeout)
	}
	proc.PidFD(pidfd).SignalGroup(unix.SIGKILL) // what it left in its group
	o, e := <-stdout, <-stderr
	if !ws.Exited() || ws.ExitStatus() != 0 {
		msg := strings.TrimSpace(e.text)
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg == "" {
			msg = "no word on stderr"
		}
		return "", fmt.Errorf("its check run %s: %s", DescribeExit(ws), msg)
	}
	if o.open || e.open {
		return "", fmt.Errorf("it exited, but a process it left outside its process group held its output past %s", timeout)
	}
	return strings.TrimSpace(o.text), nil
}

// Resume makes the Host of a master's new image from what its old image
// handed over (HandOver): it takes back every descriptor, the notify
// directory and the keeper, and starts the reaper, which reaps whatever
// exited during the exec.
func Resume(cfg Config, ev Events, st State) (*Host, error) {
	h, err := newHost(cfg, ev, func(reach ...notify.Option) (*notify.Dir, error) {
		return notify.ResumeDir(st.Notify, reach...)
	})
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ps := range st.Procs {
		unix.FcntlInt(uintptr(ps.FD), unix.F_SETFD, unix.FD_CLOEXEC)
		p := &held{pid: ps.PID, fd: ps.FD, worker: ps.Worker}
		if ps.NotifyFD >= 0 && ps.NotifyPath != "" {
			sock, err := notify.AdoptSocket(ps.NotifyFD, ps.NotifyPath)
			if err != nil {
				errs = append(errs, err)
			} else {
				p.notify = sock
				go h.receive(ps.PID, sock)
			}
		}
		h.procs[ps.PID] = p
	}
	if st.Keeper != nil {
		h.keeper = newKeeperLink(&h.cfg, h.kids)
		if err := h.keeper.resume(*st.Keeper, st.Procs, st.Outputs); err != nil {
			errs = append(errs, err)
		}
	} else if fd, err := unix.PidfdOpen(h.self, 0); err == nil {
		unix.Close(fd)
		h.keeper = newKeeperLink(&h.cfg, h.kids)
		h.keeper.start()
	} else {
		h.noPidfd = true
	}
	// After the keeper has its copies: a reader closes its pipe at the
	// end of the stream, and the number could then name another file.
	if err := h.resumeOutputs(st.Outputs); err != nil {
		errs = append(errs, err)
	}
	go h.reap()
	return h, errors.Join(errs...)
}

// handOver sends what is queued for the keeper, then describes it.
func (l *keeperLink) handOver() (*KeeperState, []int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.handing = true
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	k := l.k
	if k == nil {
		return nil, nil, nil // none runs now: the new image starts one
	}
	if !k.flush(time.Now().Add(time.Second)) {
		return nil, nil, errors.New("the keeper did not read what it was sent within 1s")
	}
	fd, err := sockets.Dup(k.conn)
	if err != nil {
		return nil, nil, fmt.Errorf("keeper socket: %w", err)
	}
	l.handed = append(l.handed, fd)
	return &KeeperState{PID: k.pid, PIDFD: k.pidfd, ConnFD: fd, Started: k.started}, []int{k.pidfd, fd}, nil
}

// takeBack lets the keeper's writer run again after a failed exec, and
// starts the keeper whose start handOver put off, if none runs.
func (l *keeperLink) takeBack() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, fd := range l.handed {
		unix.Close(fd)
	}
	l.handed = nil
	l.handing = false
	if l.k == nil && l.timer == nil {
		l.startLocked()
	}
}

// resume takes back the keeper the old image ran, and what it knows.
func (l *keeperLink) resume(ks KeeperState, procs []ProcState, outs []OutputState) error {
	unix.FcntlInt(uintptr(ks.PIDFD), unix.F_SETFD, unix.FD_CLOEXEC)
	f := os.NewFile(uintptr(ks.ConnFD), "keeper")
	fc, err := net.FileConn(f)
	f.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range procs {
		if p.FD < 0 {
			continue
		}
		fds := []int{p.FD}
		op := keeper.OpStray
		if p.Worker {
			op = keeper.OpWorker
			fds = append(fds, workerOutputFDs(p.PID, outs)...)
		}
		dups, err := dupFDs(fds)
		if err != nil {
			continue
		}
		l.known[p.PID] = keeperEntry{op: op, gen: p.Generation, fds: dups}
	}
	if err != nil {
		// Without its socket the keeper is of no use: it is replaced.
		proc.PidFD(ks.PIDFD).Signal(unix.SIGKILL)
		unix.Close(ks.PIDFD)
		l.startLocked()
		return fmt.Errorf("keeper socket handed over as fd %d: %w", ks.ConnFD, err)
	}
	exited := l.kids.adopt(ks.PID)
	k := &keeperProc{pid: ks.PID, pidfd: ks.PIDFD, started: ks.Started, conn: fc.(*net.UnixConn),
		wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	l.k = k
	go k.write()
	go func() {
		ws := <-exited
		close(k.exited)
		l.exited(k, ws)
	}()
	return nil
}

// workerOutputFDs are the read ends of worker pid's stdout and stderr
// pipes, in that order, as keeper.OpWorker carries them; none unless both
// are still read.
func workerOutputFDs(pid int, outs []OutputState) []int {
	var fds [2]int
	n := 0
	for _, o := range outs {
		if o.PID != pid {
			continue
		}
		i := 0
		if o.Stream == "stderr" {
			i = 1
		}
		fds[i] = o.FD
		n++
	}
	if n != 2 {
		return nil
	}
	return fds[:]
}

// flush waits until deadline at most for the writer to have sent what is
// queued.
func (k *keeperProc) flush(deadline time.Time) bool {
	marker := make(chan struct{})
	k.mu.Lock()
	if k.broken {
		k.mu.Unlock()
		return true
	}
	k.pending = append(k.pending, keeperMsg{mark: marker})
	k.mu.Unlock()
	k.poke()
	select {
	case <-marker:
		return true
	case <-time.After(time.Until(deadline)):
		return false
	}
}

// ExecImage writes state to an anonymous file kept open across the exec,
// names it in the new image's environment (envnames.UpgradeState), and
// executes img (see exec), unless it was written to since it was opened
// (Image.Changed).
// It returns only if that failed.
func (h *Host) ExecImage(img *Image, argv, env []string, keep []int, state []byte) error {
	if err := img.Changed(); err != nil {
		return fmt.Errorf("the new binary %s: %w", img.path, err)
	}
	fd, err := unix.MemfdCreate("baton-upgrade-state", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	f := os.NewFile(uintptr(fd), "baton-upgrade-state")
	defer f.Close()
	if _, err := f.Write(state); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	var next []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, envnames.UpgradeState+"=") && !strings.HasPrefix(kv, envnames.UpgradeCheck+"=") &&
			!strings.HasPrefix(kv, envnames.UpgradeImage+"=") {
			next = append(next, kv)
		}
	}
	next = append(next, envnames.UpgradeState+"="+strconv.Itoa(fd), envnames.UpgradeImage+"="+strconv.Itoa(img.fd))
	return h.exec(imageAt(img.fd), img.path, argv, next, append(keep, fd, img.fd))
}

// renameSelf gives this process back the name (comm: ps, pgrep, top) the
// path it was started from gave it, if an exec from the image's
// descriptor fd named it after that number instead.
func renameSelf(fd string) {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil || strings.TrimSpace(string(b)) != fd {
		return // a script executed in between, or no /proc
	}
	name := filepath.Base(os.Args[0])
	if len(name) > 15 {
		name = name[:15] // as the kernel cuts it
	}
	os.WriteFile("/proc/self/comm", []byte(name), 0)
}

// TakeState reads, in a master's new image, the state its old image
// handed over, and removes the variable that named it: nil when this
// process was not started by an in-place upgrade.
func TakeState() ([]byte, error) {
	if v, ok := os.LookupEnv(envnames.UpgradeImage); ok {
		os.Unsetenv(envnames.UpgradeImage)
		// Only the image's own descriptor, opened O_PATH: a variable a
		// build that did not know it left behind may name another.
		if fd, err := strconv.Atoi(v); err == nil && fd > 2 {
			if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil && fl&unix.O_PATH != 0 {
				unix.Close(fd)
				renameSelf(v)
			}
		}
	}
	v, ok := os.LookupEnv(envnames.UpgradeState)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(envnames.UpgradeState)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", envnames.UpgradeState, v)
	}
	f := os.NewFile(uintptr(fd), "baton-upgrade-state")
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading the handed-over state: %w", err)
	}
	return b, nil
}
