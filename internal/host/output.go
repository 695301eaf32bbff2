//go:build linux

package host

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/workerlog"
)

// With Config.Output, each worker writes its stdout and its stderr into a
// pipe of its own, whose read end only the master holds (and the keeper,
// a copy it reads only once the master is gone): both ends are
// close-on-exec from the moment they exist, so no other child inherits
// them, and the worker's end is dup'ed onto its fds 1 and 2 by the fork
// and closed in the master right after. Whatever the worker starts
// inherits its end and is logged as the worker. A goroutine per pipe
// reads it until end of file, when the worker and everything that
// inherited its end have closed it or exited, which may be after the
// worker was reaped; so the readers are the Host's, apart from the
// workers: an in-place upgrade hands every running one over.

// outputDrain bounds how long Close waits for the readers to reach end of
// file: every worker has been reaped by then, so only a process that left
// the worker's process group with the worker's output keeps a pipe open.
const outputDrain = time.Second

// outputReaders are the readers of worker output that run.
type outputReaders struct {
	mu   sync.Mutex
	runs map[*outputRun]struct{}
}

// outputRun is one stream's reader and the goroutine running it.
type outputRun struct {
	r    *workerlog.Reader
	done chan struct{} // closed when the goroutine has returned
	err  error         // Run's, once done is closed
}

func newOutputReaders() *outputReaders {
	return &outputReaders{runs: map[*outputRun]struct{}{}}
}

// start runs r until its stream ends, or until stop.
func (o *outputReaders) start(r *workerlog.Reader) {
	run := &outputRun{r: r}
	o.mu.Lock()
	o.runs[run] = struct{}{}
	o.mu.Unlock()
	o.run(run)
}

func (o *outputReaders) run(run *outputRun) {
	run.done = make(chan struct{})
	go func() {
		defer close(run.done)
		run.err = run.r.Run()
		if run.err == nil { // the end of the stream
			o.mu.Lock()
			delete(o.runs, run)
			o.mu.Unlock()
			run.r.File().Close()
		}
	}()
}

// running lists the readers that run now.
func (o *outputReaders) running() []*outputRun {
	o.mu.Lock()
	defer o.mu.Unlock()
	runs := make([]*outputRun, 0, len(o.runs))
	for run := range o.runs {
		runs = append(runs, run)
	}
	return runs
}

// stop interrupts every reader, once what it has read is logged, and
// describes them for an in-place upgrade's new image, with the
// descriptors to keep open; the readers that ended meanwhile are left
// out. resume undoes it.
func (o *outputReaders) stop() ([]OutputState, []int) {
	runs := o.running()
	for _, run := range runs {
		run.r.Stop()
	}
	var st []OutputState
	var keep []int
	for _, run := range runs {
		<-run.done
		if run.err == nil {
			continue
		}
		fd := -1
		if rc, err := run.r.File().SyscallConn(); err == nil {
			// Not File.Fd, which would make the pipe blocking.
			rc.Control(func(d uintptr) { fd = int(d) })
		}
		if fd < 0 {
			continue
		}
		src := run.r.Source()
		st = append(st, OutputState{PID: src.PID, Gen: src.Gen, Index: src.Index, Stream: run.r.Stream().String(),
			FD: fd, State: run.r.State()})
		keep = append(keep, fd)
	}
	return st, keep
}

// resume restarts the readers stop interrupted, after a failed exec.
func (o *outputReaders) resume() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for run := range o.runs {
		select {
		case <-run.done:
			if run.err != nil {
				run.r.Resume()
				o.run(run)
			}
		default: // not stopped
		}
	}
}

// close waits up to outputDrain for the readers to reach the end of
// their streams, then stops those still reading and closes their pipes:
// a process still writing into one then gets EPIPE.
func (o *outputReaders) close() {
	deadline := time.After(outputDrain)
	runs := o.running()
	for _, run := range runs {
		select {
		case <-run.done:
		case <-deadline:
			run.r.Stop()
			<-run.done
		}
		run.r.File().Close()
	}
}

// outputPipes are a starting worker's stdout and stderr pipes.
type outputPipes struct {
	w [2]int      // the worker's ends, for its fds 1 and 2
	r [2]*os.File // the master's ends, non-blocking
}

// newOutputPipes makes a worker's pipes, every end close-on-exec. With
// cred, the pipes are the worker's user's, as a pipe its user made would
// be, so that it can open /dev/stdout and /dev/stderr (as nginx's
// error_log does), which the kernel allows only to the pipe's owner.
func newOutputPipes(cred *syscall.Credential) (*outputPipes, error) {
	p := &outputPipes{w: [2]int{-1, -1}}
	for i := range p.w {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			p.close()
			return nil, fmt.Errorf("worker output pipe: %w", err)
		}
		if cred != nil {
			if err := unix.Fchown(fds[1], int(cred.Uid), int(cred.Gid)); err != nil {
				unix.Close(fds[0])
				unix.Close(fds[1])
				p.close()
				return nil, fmt.Errorf("worker output pipe: %w", err)
			}
		}
		unix.SetNonblock(fds[0], true)
		p.w[i] = fds[1]
		p.r[i] = os.NewFile(uintptr(fds[0]), []string{"worker stdout", "worker stderr"}[i])
	}
	return p, nil
}

// closeWrite closes the worker's ends, once it has them.
func (p *outputPipes) closeWrite() {
	for i, fd := range p.w {
		if fd >= 0 {
			unix.Close(fd)
			p.w[i] = -1
		}
	}
}

func (p *outputPipes) close() {
	p.closeWrite()
	for _, f := range p.r {
		if f != nil {
			f.Close()
		}
	}
}

// readFDs duplicates the read ends, close-on-exec, for the keeper.
func (p *outputPipes) readFDs() ([]int, error) {
	var fds []int
	for _, f := range p.r {
		var fd int
		var err error
		rc, _ := f.SyscallConn()
		rc.Control(func(d uintptr) { fd, err = unix.FcntlInt(d, unix.F_DUPFD_CLOEXEC, 0) })
		if err != nil {
			closeFDs(fds)
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// startOutput starts reading worker pid's pipes.
func (h *Host) startOutput(p *outputPipes, src workerlog.Source) {
	lim := workerlog.NewLimiter(*h.cfg.Output)
	for i, f := range p.r {
		h.outputs.start(workerlog.NewReader(f, h.cfg.Output, src, workerlog.Stream(i+1), lim, workerlog.State{}))
	}
}

// OutputState is a stream of worker output being read, as handed over.
type OutputState struct {
	PID    int    `json:"pid"`
	Gen    int    `json:"gen"`
	Index  int    `json:"index"`
	Stream string `json:"stream"`
	FD     int    `json:"fd"`
	workerlog.State
}

// resumeOutputs takes back the readers an old image handed over. Those
// of one worker share a limiter again.
func (h *Host) resumeOutputs(st []OutputState) error {
	cfg := h.cfg.Output
	var err error
	if cfg == nil && len(st) > 0 {
		// This image lets workers write where they will, but the old one
		// logged their output: it is logged until it ends all the same,
		// or the workers would block on their pipes.
		cfg = &workerlog.Config{Out: os.Stderr}
		err = errors.New("the old image logged the workers' output: the output of the workers it started is still logged")
	}
	lims := map[int]*workerlog.Limiter{}
	for _, o := range st {
		unix.FcntlInt(uintptr(o.FD), unix.F_SETFD, unix.FD_CLOEXEC)
		f := os.NewFile(uintptr(o.FD), "worker "+o.Stream)
		lim, ok := lims[o.PID]
		if !ok {
			lim = workerlog.NewLimiter(*cfg)
			lims[o.PID] = lim
		}
		s := workerlog.Stdout
		if o.Stream == workerlog.Stderr.String() {
			s = workerlog.Stderr
		}
		h.outputs.start(workerlog.NewReader(f, cfg, workerlog.Source{Gen: o.Gen, Index: o.Index, PID: o.PID}, s, lim, o.State))
	}
	return err
}
