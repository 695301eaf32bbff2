//go:build linux

package workerlog

import (
	"bytes"
	"unicode/utf8"
)

// Splitter cuts a stream into lines (see the package's guarantees). Its
// state, a partial line and whether the rest of a cut line is being
// discarded, is what a stream hands over across an in-place upgrade.
type Splitter struct {
	partial []byte
	cut     bool
}

// State is a Splitter's state: what a Reader hands over.
type State struct {
	// Pending is the start of a line whose newline has not come yet.
	Pending []byte `json:"pending,omitempty"`
	// Cut says the stream is in the rest of a line already logged cut.
	Cut bool `json:"cut,omitempty"`
}

// NewSplitter returns a Splitter that carries on from st.
func NewSplitter(st State) *Splitter {
	return &Splitter{partial: append([]byte(nil), st.Pending...), cut: st.Cut}
}

// State describes s.
func (s *Splitter) State() State {
	return State{Pending: append([]byte(nil), s.partial...), Cut: s.cut}
}

// Feed splits p, the next bytes of the stream, calling emit for each line
// it completes; a line passed to emit is valid only during the call.
func (s *Splitter) Feed(p []byte, emit func(line []byte, cut bool)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if s.cut {
			if i < 0 {
				return
			}
			s.cut, p = false, p[i+1:]
			continue
		}
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if len(s.partial)+len(chunk) > MaxLine {
			line := append(s.partial, chunk[:MaxLine-len(s.partial)]...)
			emit(utf8Prefix(line), true)
			s.reset()
			if i < 0 {
				s.cut = true
				return
			}
			p = p[i+1:]
			continue
		}
		if i < 0 {
			s.partial = append(s.partial, chunk...)
			return
		}
		if len(s.partial) == 0 {
			emit(trimCR(chunk), false)
		} else {
			s.partial = append(s.partial, chunk...)
			emit(trimCR(s.partial), false)
			s.reset()
		}
		p = p[i+1:]
	}
}

// End passes on the line left without a newline when the stream ended.
func (s *Splitter) End(emit func(line []byte, cut bool)) {
	if len(s.partial) > 0 {
		emit(trimCR(s.partial), false)
	}
	s.reset()
	s.cut = false
}

// reset empties the partial line, letting go of a big buffer: a master
// with many quiet workers holds little.
func (s *Splitter) reset() {
	if cap(s.partial) > 4<<10 {
		s.partial = nil
	} else {
		s.partial = s.partial[:0]
	}
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// utf8Prefix drops a UTF-8 character cut short at the end of b.
func utf8Prefix(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			return b
		}
	}
	return b
}
