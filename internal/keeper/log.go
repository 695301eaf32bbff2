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
	mu   sync.Mutex // one line at a time: the keeper's own, and its workers' (Write)
}

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
	l.Write(b)
}

// Write writes b, one or more whole lines, to stderr in one write, so
// that lines from the master and workers do not interleave with it.
func (l *logger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return os.Stderr.Write(b)
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
