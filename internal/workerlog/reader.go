//go:build linux

package workerlog

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Reader logs one stream of one worker: the read end of a pipe, which it
// reads until end of file, that is until the worker and every process
// that inherited its end have closed it or exited.
type Reader struct {
	f      *os.File
	cfg    *Config
	src    Source
	stream Stream
	lim    *Limiter
	split  *Splitter
	out    []byte // the event being written
	now    time.Time
	stop   atomic.Bool
}

// NewReader returns a Reader of f, the read end of a pipe, which must be
// in non-blocking mode so that Stop can interrupt it (os.NewFile on such
// a descriptor), carrying on from st. lim is the worker's, shared by its
// streams.
func NewReader(f *os.File, cfg *Config, src Source, s Stream, lim *Limiter, st State) *Reader {
	return &Reader{f: f, cfg: cfg, src: src, stream: s, lim: lim, split: NewSplitter(st)}
}

// File is the pipe the Reader reads.
func (r *Reader) File() *os.File { return r.f }

// Source and Stream say whose output the Reader logs.
func (r *Reader) Source() Source { return r.src }
func (r *Reader) Stream() Stream { return r.stream }

// State is the Reader's splitter state, once Run has returned.
func (r *Reader) State() State { return r.split.State() }

// buffers are read buffers, held only while a read is in hand: a reader
// waiting on a quiet worker holds none.
var buffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Run reads and logs the stream until it ends and returns nil, having
// logged the line left without a newline and the dropped lines not yet
// reported. It returns os.ErrDeadlineExceeded when Stop interrupted it:
// every complete line read so far has been logged, the dropped lines not
// yet reported too, and State holds the rest, so that Run can be called
// again, here or, for an in-place upgrade, in a Reader of the new image.
// Any other error (the file was closed) ends it as end of file does.
func (r *Reader) Run() error {
	rc, err := r.f.SyscallConn()
	if err != nil {
		return err
	}
	eof, stopped := false, false
	err = rc.Read(func(fd uintptr) bool {
		bp := buffers.Get().(*[]byte)
		defer buffers.Put(bp)
		for {
			if r.stop.Load() {
				// A worker that writes faster than this reads never
				// leaves the pipe empty: Stop is heard here too.
				stopped = true
				return true
			}
			n, err := unix.Read(int(fd), *bp)
			switch {
			case n > 0:
				r.now = time.Now()
				r.split.Feed((*bp)[:n], r.emit)
			case err == unix.EINTR:
			case err == unix.EAGAIN:
				return false // wait until there is more
			default: // 0: end of file; or an error, taken as one
				eof = true
				return true
			}
		}
	})
	r.now = time.Now()
	r.reportDropped(r.lim.flush())
	if stopped || errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	if eof || err != nil {
		r.split.End(r.emit)
		r.reportDropped(r.lim.flush())
	}
	return nil
}

// Stop makes Run return os.ErrDeadlineExceeded once the lines read so far
// are logged. Resume undoes it, for Run to be called again.
func (r *Reader) Stop() {
	r.stop.Store(true)
	r.f.SetReadDeadline(time.Unix(1, 0))
}

func (r *Reader) Resume() {
	r.stop.Store(false)
	r.f.SetReadDeadline(time.Time{})
}

func (r *Reader) emit(line []byte, cut bool) {
	ok, report := r.lim.allow(r.now)
	r.reportDropped(report)
	if !ok {
		return
	}
	r.out = AppendLine(r.out[:0], r.cfg, r.now, r.src, r.stream, line, cut)
	r.write()
}

func (r *Reader) reportDropped(n uint64) {
	if n == 0 {
		return
	}
	r.out = AppendDropped(r.out[:0], r.cfg, r.now, r.src, n)
	r.write()
}

func (r *Reader) write() {
	r.cfg.Out.Write(r.out)
	if cap(r.out) > 4<<10 {
		r.out = nil // a long line's buffer is not kept
	}
}
