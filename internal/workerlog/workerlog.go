//go:build linux

// Package workerlog turns what a worker writes to its stdout and stderr
// into baton's log events (--worker-output log): it splits each stream
// into lines of bounded length, bounds how many lines a second each
// worker may log, and writes every line as one event, in baton's JSON or
// console format, with one Write call to the log's writer. The master
// (internal/host) reads its workers' pipes with it; the keeper
// (internal/keeper) reads the pipes of the workers a killed master left.
//
// Guarantees, for each worker:
//
//   - A line is what comes before a newline (a trailing carriage return
//     is left out), or what was left without one when the stream ended.
//     A line longer than MaxLine bytes is cut: its first MaxLine bytes (or
//     fewer, so as not to split a UTF-8 character) make an event marked
//     cut, and the rest of it, up to its newline, is read and discarded.
//   - Lines beyond the rate (Config.Rate lines a second, averaged over
//     BurstSeconds) are dropped and counted; the count is logged as a
//     worker_output_dropped event before the next line that passes, at
//     most once every DropReportInterval, and when the stream ends or is
//     handed over.
//   - A Reader never waits for its log: the master's writer is its log
//     queue, which drops lines rather than block (internal/logging). So a
//     reader drains its pipe as fast as the worker fills it, and a worker
//     waits on its own output only as long as its pipe's buffer (64 KiB)
//     takes to be read.
package workerlog

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Limits of worker output.
const (
	// MaxLine is the longest line logged whole, in bytes; longer lines
	// are cut.
	MaxLine = 16 << 10
	// DefaultRate is how many lines a second each worker may log when
	// Config.Rate is zero.
	DefaultRate = 1000
	// BurstSeconds is how long a rate is averaged over: a worker that was
	// quiet may log BurstSeconds×Rate lines at once (a start-up banner, a
	// stack dump) before lines are dropped.
	BurstSeconds = 10
	// DropReportInterval is how often at most a worker's dropped lines
	// are reported while the drops go on.
	DropReportInterval = time.Second
)

// Event names: the stable "event" field of the lines this package writes.
const (
	EventOutput  = "worker_output"
	EventDropped = "worker_output_dropped"
)

// Config is how worker output becomes log events.
type Config struct {
	// Out receives each event, one Write call each. It must not block
	// for long: the master gives its log queue, which never does.
	Out io.Writer
	// Console writes events for people (a "gen/index/pid stream|" prefix
	// and the line as it was written) instead of JSON.
	Console bool
	// Rate is how many lines a second each worker may log, averaged over
	// BurstSeconds: 0 means DefaultRate, a negative rate no limit.
	Rate int
	// Process, when set, is logged as the "process" field: the keeper's
	// lines say "keeper".
	Process string
}

// Stream is a worker's stdout or stderr.
type Stream uint8

// The two streams, by file descriptor.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

func (s Stream) short() string {
	if s == Stderr {
		return "err"
	}
	return "out"
}

// Source is the worker a stream belongs to.
type Source struct {
	Gen, PID int
	// Index is the worker's slot; negative when unknown (the keeper reads
	// it from the worker's environment, which a worker that has exited no
	// longer shows).
	Index int
}

// Limiter is one worker's rate: a bucket of BurstSeconds×Rate lines that
// refills at Rate lines a second, shared by the worker's streams. A nil
// Limiter lets every line through.
type Limiter struct {
	mu       sync.Mutex
	rate     float64
	burst    float64
	tokens   float64
	last     time.Time
	dropped  uint64
	reported time.Time
}

// NewLimiter returns the limiter of one worker under cfg, or nil when
// cfg sets no limit.
func NewLimiter(cfg Config) *Limiter {
	rate := cfg.Rate
	if rate == 0 {
		rate = DefaultRate
	}
	if rate < 0 {
		return nil
	}
	b := float64(rate) * BurstSeconds
	return &Limiter{rate: float64(rate), burst: b, tokens: b}
}

// allow reports whether a line read at now may be logged, and how many
// dropped lines to report first (0: none).
func (l *Limiter) allow(now time.Time) (ok bool, report uint64) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return false, 0
	}
	l.tokens--
	if l.dropped > 0 && now.Sub(l.reported) >= DropReportInterval {
		report, l.dropped, l.reported = l.dropped, 0, now
	}
	return true, report
}

// flush takes the count of dropped lines not yet reported.
func (l *Limiter) flush() uint64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.dropped
	l.dropped = 0
	return n
}

// Dropped is how many lines the limiter has dropped and not reported yet.
func (l *Limiter) Dropped() uint64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// AppendLine appends the event of one line of worker output, written at
// t, in cfg's format, ending in a newline.
func AppendLine(b []byte, cfg *Config, t time.Time, src Source, s Stream, line []byte, cut bool) []byte {
	if cfg.Console {
		b = t.AppendFormat(b, "15:04:05.000")
		b = append(b, ' ')
		b = appendSource(b, src)
		b = append(b, ' ')
		b = append(b, s.short()...)
		b = append(b, "| "...)
		b = appendTerminalText(b, line)
		if cut {
			b = append(b, " [cut]"...)
		}
		return append(b, '\n')
	}
	b = appendHead(b, cfg, "info", EventOutput, src)
	b = append(b, `,"stream":"`...)
	b = append(b, s.String()...)
	b = append(b, '"')
	if cut {
		b = append(b, `,"cut":true`...)
	}
	return appendTail(b, t, line)
}

// AppendDropped appends the event that reports n lines of worker output
// dropped over the rate, in cfg's format.
func AppendDropped(b []byte, cfg *Config, t time.Time, src Source, n uint64) []byte {
	const msg = "worker output dropped: more lines than --worker-output-rate allows"
	if cfg.Console {
		b = t.AppendFormat(b, "15:04:05.000")
		b = append(b, " WRN "...)
		b = appendSource(b, src)
		b = append(b, ": "...)
		b = append(b, msg...)
		b = append(b, " dropped="...)
		b = strconv.AppendUint(b, n, 10)
		return append(b, '\n')
	}
	b = appendHead(b, cfg, "warn", EventDropped, src)
	b = append(b, `,"dropped":`...)
	b = strconv.AppendUint(b, n, 10)
	return appendTail(b, t, []byte(msg))
}

// appendSource writes gen/index/pid, "?" for an unknown index.
func appendSource(b []byte, src Source) []byte {
	b = strconv.AppendInt(b, int64(src.Gen), 10)
	b = append(b, '/')
	if src.Index < 0 {
		b = append(b, '?')
	} else {
		b = strconv.AppendInt(b, int64(src.Index), 10)
	}
	b = append(b, '/')
	return strconv.AppendInt(b, int64(src.PID), 10)
}

// appendHead and appendTail write the fields of baton's JSON lines as
// zerolog does (internal/logging): level, component, then the event's
// fields, then time and message.
func appendHead(b []byte, cfg *Config, level, event string, src Source) []byte {
	b = append(b, `{"level":"`...)
	b = append(b, level...)
	b = append(b, `","component":"baton"`...)
	if cfg.Process != "" {
		b = append(b, `,"process":`...)
		b = AppendJSONString(b, []byte(cfg.Process))
	}
	b = append(b, `,"event":"`...)
	b = append(b, event...)
	b = append(b, `","gen":`...)
	b = strconv.AppendInt(b, int64(src.Gen), 10)
	if src.Index >= 0 {
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(src.Index), 10)
	}
	b = append(b, `,"pid":`...)
	return strconv.AppendInt(b, int64(src.PID), 10)
}

func appendTail(b []byte, t time.Time, msg []byte) []byte {
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","message":`...)
	b = AppendJSONString(b, msg)
	return append(b, "}\n"...)
}

// appendTerminalText appends s for a terminal: colour sequences (ESC [
// digits and semicolons m) pass, so a worker's coloured log stays
// coloured, followed by a reset so no colour leaks into baton's next
// line; every other control byte but tab is written as \xNN, so a
// worker's line cannot move the cursor, clear the screen, retitle the
// window or end baton's line early. So are the C1 controls (U+0080 to
// U+009F, such as CSI and NEL, which terminals obey in UTF-8 too) and
// bytes that are not UTF-8 (a lone 0x9B is CSI to a Latin-1 terminal).
func appendTerminalText(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	coloured := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			r, n := utf8.DecodeRune(s[i:])
			if n > 1 && r > 0x9f { // a character past the C1 controls
				b = append(b, s[i:i+n]...)
				i += n - 1
				continue
			}
			for _, c := range s[i : i+n] {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			}
			i += n - 1
			continue
		}
		if c >= 0x20 && c != 0x7f || c == '\t' {
			b = append(b, c)
			continue
		}
		if n := sgrLen(s[i:]); n > 0 {
			b = append(b, s[i:i+n]...)
			i += n - 1
			coloured = true
			continue
		}
		b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
	}
	if coloured {
		b = append(b, "\x1b[0m"...)
	}
	return b
}

// sgrLen is the length of the colour sequence (SGR) s begins with, or 0.
func sgrLen(s []byte) int {
	if len(s) < 3 || s[0] != 0x1b || s[1] != '[' {
		return 0
	}
	for i := 2; i < len(s) && i < 64; i++ {
		switch c := s[i]; {
		case c == 'm':
			return i + 1
		case c != ';' && (c < '0' || c > '9'):
			return 0
		}
	}
	return 0
}

// AppendJSONString appends s as a JSON string: quotes and backslashes
// escaped, control characters as \u00XX, and each byte that is not part
// of valid UTF-8 as \ufffd, as zerolog writes strings.
func AppendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\t':
				b = append(b, '\\', 't')
			case '\r':
				b = append(b, '\\', 'r')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
