//go:build linux

package keeper

import (
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The keeper logs a few lines, in baton's formats (JSON as zerolog writes
// it, or console), without baton's logging packages, which would cost it
// their start-up time and memory.
//
// Logging never holds the keeper up: a line is queued and written to
// stderr by a goroutine of its own, so a log reader that stalls (a full
// pipe, a collector that stopped reading) costs lines, never the SIGKILL
// the keeper owes the processes the master left. Past maxLogQueue bytes
// waiting, lines are dropped and counted, and the next line written says
// how many.

const (
	lDebug = iota
	lInfo
	lWarn
	lError
)

var levelNames = [...]string{"debug", "info", "warn", "error"}
var levelShort = [...]string{"DBG", "INF", "WRN", "ERR"}

type logger struct {
	json bool
	min  int

	mu      sync.Mutex
	queue   []logEntry
	queued  int // bytes in queue
	dropped int // lines dropped since the last one written
	wake    chan struct{}
}

// logEntry is a line to write, or a mark closed once every line queued
// before it was written (flush).
type logEntry struct {
	b    []byte
	mark chan struct{}
}

// maxLogQueue bounds the bytes of log lines waiting for stderr: some
// hundreds of worker output lines, a few seconds of them at the rate the
// master allows a worker.
const maxLogQueue = 256 << 10

func newLogger(c Config) *logger {
	l := &logger{json: c.LogJSON, min: lInfo}
	for i, n := range levelNames {
		if n == c.LogLevel {
			l.min = i
		}
	}
	return l
}

// log writes one line with msg and the key-value pairs kv (string keys;
// string, int or time.Duration values).
func (l *logger) log(level int, msg string, kv ...any) {
	if level < l.min {
		return
	}
	l.Write(l.line(level, msg, kv...))
}

// line formats a log line.
func (l *logger) line(level int, msg string, kv ...any) []byte {
	now := time.Now()
	var b []byte
	if l.json {
		b = append(b, `{"level":"`...)
		b = append(b, levelNames[level]...)
		b = append(b, `","component":"baton","process":"keeper"`...)
		for i := 0; i+1 < len(kv); i += 2 {
			b = append(b, ',')
			b = appendJSONString(b, kv[i].(string))
			b = append(b, ':')
			switch v := kv[i+1].(type) {
			case int:
				b = strconv.AppendInt(b, int64(v), 10)
			case time.Duration:
				b = appendJSONString(b, v.Round(time.Millisecond).String())
			case string:
				b = appendJSONString(b, v)
			}
		}
		b = append(b, `,"time":"`...)
		b = now.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","message":`...)
		b = appendJSONString(b, msg)
		b = append(b, "}\n"...)
	} else {
		b = now.AppendFormat(b, "15:04:05.000")
		b = append(b, ' ')
		b = append(b, levelShort[level]...)
		b = append(b, " keeper: "...)
		b = append(b, msg...)
		for i := 0; i+1 < len(kv); i += 2 {
			b = append(b, ' ')
			b = append(b, kv[i].(string)...)
			b = append(b, '=')
			switch v := kv[i+1].(type) {
			case int:
				b = strconv.AppendInt(b, int64(v), 10)
			case time.Duration:
				b = append(b, v.Round(time.Millisecond).String()...)
			case string:
				b = append(b, v...)
			}
		}
		b = append(b, '\n')
	}
	return b
}

// Write queues b, one or more whole lines, to be written to stderr in one
// write, so that lines from the master and workers do not interleave with
// it. It never blocks on stderr.
func (l *logger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.queued+len(b) > maxLogQueue {
		l.dropped++
		return len(b), nil
	}
	l.queued += len(b)
	l.push(logEntry{b: append([]byte(nil), b...)})
	return len(b), nil
}

// flush waits up to d for every line queued so far to be written.
func (l *logger) flush(d time.Duration) {
	mark := make(chan struct{})
	l.mu.Lock()
	l.push(logEntry{mark: mark})
	l.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-mark:
	case <-t.C:
	}
}

// push queues e, starting the writer at the first line; l.mu is held.
func (l *logger) push(e logEntry) {
	if l.wake == nil {
		l.wake = make(chan struct{}, 1)
		go l.write()
	}
	l.queue = append(l.queue, e)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// write writes the queued lines to stderr, in order, for the keeper's life.
func (l *logger) write() {
	for range l.wake {
		l.mu.Lock()
		q, dropped := l.queue, l.dropped
		l.queue, l.dropped = nil, 0
		l.mu.Unlock()
		if dropped > 0 {
			os.Stderr.Write(l.line(lWarn, "the log's reader was too slow: lines dropped", "event", "keeper_log_dropped", "lines", dropped))
		}
		for _, e := range q {
			if e.mark != nil {
				close(e.mark)
				continue
			}
			os.Stderr.Write(e.b)
			l.mu.Lock()
			l.queued -= len(e.b)
			l.mu.Unlock()
		}
	}
}

func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		case r == utf8.RuneError:
			b = append(b, `\ufffd`...)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}
