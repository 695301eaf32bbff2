// Package logging builds baton's zerolog logger from the --log-format and
// --log-level flags, and guarantees that logging can neither stop nor kill
// the process that logs.
//
// A log line is handed to a bounded queue and written out by one goroutine
// of its own, so a caller never waits for the log's reader: a reader that
// stalls (a full pipe, a log collector that stopped reading) costs lines,
// not progress. When the queue is full, lines are dropped and counted
// (Dropped), and once a write goes through again one line says how many
// were lost. Lines of worker output (Output) share the queue, in order
// with baton's own, but never fill more than OutputQueueBytes of it, so
// that baton's own lines always have room. A reader that is gone (EPIPE)
// is not fatal: New makes the process receive SIGPIPE as a signal instead
// of dying of it. Close flushes what is queued, waiting at most
// FlushTimeout.
package logging

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Defaults of the queue between the logger and the log's reader.
const (
	// QueueBytes bounds the log lines waiting for the reader: a few
	// thousand lines of baton's log.
	QueueBytes = 256 << 10
	// OutputQueueBytes bounds the lines of worker output (Output) in the
	// queue: the rest of it is kept for baton's own lines, so that a
	// worker flooding its output cannot crowd them out.
	OutputQueueBytes = QueueBytes * 3 / 4
	// FlushTimeout bounds how long Close waits for queued lines to be
	// written: a stalled reader must not hold up baton's exit.
	FlushTimeout = time.Second
)

// Log is baton's logger and the queue behind it.
type Log struct {
	zerolog.Logger
	q       *queue
	console bool
}

// New returns a logger writing to w. format is json, console or auto
// (console when w is a terminal); level is a zerolog level name.
func New(w *os.File, format, level string) (*Log, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	tty := isatty.IsTerminal(w.Fd())
	var console bool
	switch format {
	case "json":
	case "console":
		console = true
	case "auto", "":
		console = tty
	default:
		return nil, fmt.Errorf("--log-format %q: want json, console or auto", format)
	}
	setup.Do(setupProcess)
	format1 := func(out io.Writer) zerolog.Logger {
		if console {
			out = zerolog.ConsoleWriter{Out: out, TimeFormat: "15:04:05.000", NoColor: !tty}
		}
		return zerolog.New(out).Level(lvl).With().Timestamp().Str("component", "baton").Logger()
	}
	// The drop notice is written by the queue's own goroutine, straight to
	// w: it must not wait in the queue it reports on.
	nw := &errWriter{w: w}
	notice := format1(nw)
	q := newQueue(w, QueueBytes, func(n uint64) bool {
		notice.Warn().Str("event", "log_dropped").Uint64("dropped", n).Msg("log lines dropped: the log's reader did not keep up")
		return nw.err == nil
	})
	return &Log{Logger: format1(q), q: q, console: console}, nil
}

// Console reports whether the log is written for people rather than as
// JSON.
func (l *Log) Console() bool { return l.console }

// Output is the queue for lines that are already log events in the log's
// format, written by baton for its workers (internal/workerlog). They are
// queued like baton's own lines, never blocking, but may fill the queue
// only up to OutputQueueBytes: beyond it they are dropped and counted.
func (l *Log) Output() io.Writer { return outputWriter{l.q} }

type outputWriter struct{ q *queue }

func (w outputWriter) Write(p []byte) (int, error) { return w.q.write(p, OutputQueueBytes) }

// Stderr is the queue itself, for lines that are not log events, such as
// baton's last line saying why it exits: they keep their place after the
// log lines before them, and cannot block either.
func (l *Log) Stderr() io.Writer { return l.q }

// Dropped counts the lines lost so far: queue full, or the reader gone.
func (l *Log) Dropped() uint64 { return l.q.dropped.Load() }

// Close writes out what is queued, waiting at most FlushTimeout, and
// reports whether everything was written. Lines logged after Close are
// dropped.
func (l *Log) Close() bool { return l.q.close(FlushTimeout) }

// Flush waits, FlushTimeout at most, until every line logged so far has
// been written: before the master executes its new image in an in-place
// upgrade, which would lose what is queued.
func (l *Log) Flush() bool { return l.q.flush(FlushTimeout) }

var setup sync.Once

// setupProcess makes the process-wide settings logging relies on, once.
func setupProcess() {
	// A write to a broken pipe becomes an EPIPE error. The Go runtime
	// kills a program that writes to a broken pipe on fd 1 or 2 unless
	// SIGPIPE is notified; signal.Ignore would do too, but an ignored
	// signal stays ignored in the programs baton starts, whereas a handler
	// is reset by exec.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// zerolog reports a failed write on os.Stderr, which could block on
	// the very reader that failed; the queue counts failures itself.
	zerolog.ErrorHandler = func(error) {}
	zerolog.TimeFieldFormat = time.RFC3339Nano
}

// queue is a bounded, non-blocking io.Writer in front of a slow one.
type queue struct {
	dst    io.Writer
	max    int
	notice func(dropped uint64) bool // reports whether it was written

	mu          sync.Mutex
	entries     []entry
	size        int    // bytes queued or being written
	tailDropped uint64 // dropped after the last queued line
	closed      bool

	dropped atomic.Uint64
	wake    chan struct{}
	done    chan struct{}
}

// entry is a queued line and the number of lines dropped just before it,
// so that the drop notice lands where the gap is.
type entry struct {
	line    []byte
	dropped uint64
	mark    chan struct{} // not a line: closed once the lines before it are out (Flush)
}

func newQueue(dst io.Writer, max int, notice func(uint64) bool) *queue {
	q := &queue{dst: dst, max: max, notice: notice, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

// Write queues a copy of p, or drops it when the queue is full. It never
// blocks and never fails: the caller is the master's lifecycle, which must
// go on whatever happens to its log.
func (q *queue) Write(p []byte) (int, error) { return q.write(p, q.max) }

// write queues p unless the queue would then hold more than limit bytes.
func (q *queue) write(p []byte, limit int) (int, error) {
	q.mu.Lock()
	if q.closed || q.size+len(p) > limit {
		q.tailDropped++
		q.mu.Unlock()
		q.dropped.Add(1)
		return len(p), nil
	}
	q.entries = append(q.entries, entry{line: append([]byte(nil), p...), dropped: q.tailDropped})
	q.tailDropped = 0
	q.size += len(p)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// run writes queued lines out in order until the queue is closed and
// empty. Before the first line written after a gap, a notice says how
// many lines the gap lost; lines the writer failed to write (EPIPE) count
// as lost too.
func (q *queue) run() {
	defer close(q.done)
	var lost uint64 // failed or dropped, not yet reported
	for {
		q.mu.Lock()
		entries, closed := q.entries, q.closed
		q.entries = nil
		if len(entries) == 0 {
			// Everything queued is out: report a gap at the end now, not
			// at the next line, which may come much later.
			lost += q.tailDropped
			q.tailDropped = 0
		}
		q.mu.Unlock()
		if len(entries) == 0 {
			if lost > 0 && q.notice(lost) {
				lost = 0
			}
			if closed {
				return
			}
			<-q.wake
			continue
		}
		written := 0
		for _, e := range entries {
			if e.mark != nil {
				close(e.mark)
				continue
			}
			lost += e.dropped
			if lost > 0 && q.notice(lost) {
				lost = 0
			}
			if _, err := q.dst.Write(e.line); err != nil {
				lost++
				q.dropped.Add(1)
			}
			written += len(e.line)
		}
		q.mu.Lock()
		// The lines just written counted against the bound until now, so
		// the queue holds at most max bytes, written or waiting.
		q.size -= written
		q.mu.Unlock()
	}
}

// errWriter remembers the error of its last write.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// flush waits up to timeout for the lines queued so far to be written.
func (q *queue) flush(timeout time.Duration) bool {
	mark := make(chan struct{})
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.entries = append(q.entries, entry{mark: mark})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-mark:
		return true
	case <-t.C:
		return false
	}
}

// close stops taking lines and waits up to timeout for the queued ones to
// be written.
func (q *queue) close(timeout time.Duration) bool {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-q.done:
		return true
	case <-t.C:
		return false
	}
}
