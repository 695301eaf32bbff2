package envfile

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Parse reads the assignments in data, the contents of the file called
// name, as systemd reads an EnvironmentFile=, and returns them in file
// order (a name may come more than once; the last one wins when applied).
//
// The syntax, as systemd.exec(5) documents it and systemd's parser does it:
//   - Each line is NAME=VALUE. Blank lines, lines whose first non-blank
//     character is # or ;, and lines without = are skipped. A comment
//     ends at its line's end, even after a backslash.
//   - Blanks (space, tab, CR) around the name and around the value are
//     dropped; blanks inside the value are kept. \r ends a line as \n
//     does, so CRLF files read as LF files.
//   - Unquoted, a backslash keeps the next character as it is ("\\" is
//     one backslash) and a backslash at the end of a line joins the next
//     line, the newline dropped. Quotes after the first character of an
//     unquoted value are kept as they are.
//   - 'single quotes' keep everything up to the next ' as it is, newlines
//     included. "double quotes" may span lines too; in them a backslash
//     before " \ ` or $ yields that character, before a newline drops
//     both, and before anything else is kept along with it. After a
//     closing quote, blanks are skipped and whatever follows is appended:
//     A="x" 'y' is xy.
//   - Nothing is expanded: $HOME stays $HOME.
//
// Where systemd would ignore an assignment or take the rest of the file
// for a value, Parse fails instead (see the package doc); its error is one
// line that starts with "name:line:".
func Parse(name string, data []byte) ([]Var, error) {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return nil, fmt.Errorf("%s:%d: a NUL byte: an environment file is text", name, 1+bytes.Count(data[:i], []byte{'\n'}))
	}
	p := parser{file: name, line: 1}
	for _, c := range data {
		p.step(c)
		if p.err != nil {
			return nil, p.err
		}
		if c == '\n' {
			p.line++
		}
	}
	p.end()
	if p.err != nil {
		return nil, p.err
	}
	return p.vars, nil
}

// state is where the parser is within a line.
type state int

const (
	preKey            state = iota // before a name: blanks, empty lines
	inKey                          // in a name, before =
	preValue                       // after = or a closing quote: blanks skipped
	inValue                        // in an unquoted value
	valueEscape                    // after \ in an unquoted value
	singleQuoted                   // in '…'
	doubleQuoted                   // in "…"
	doubleQuoteEscape              // after \ in "…"
	inComment                      // after # or ; at the start of a line
	commentEscape                  // after \ in a comment
)

type parser struct {
	file string
	line int // of the byte being read
	st   state

	key, value []byte
	keyLine    int // the line the name starts on
	quoteLine  int // the line the open quote is on
	// keyBlank and valueBlank are where trailing blanks start in key and
	// in an unquoted value, or -1.
	keyBlank, valueBlank int

	vars []Var
	err  error
}

func isNewline(c byte) bool { return c == '\n' || c == '\r' }
func isBlank(c byte) bool   { return c == ' ' || c == '\t' || isNewline(c) }

func (p *parser) step(c byte) {
	switch p.st {
	case preKey:
		switch {
		case c == '#' || c == ';':
			p.st = inComment
		case !isBlank(c):
			// Whatever it is, even '=': systemd takes the first
			// character as part of the name.
			p.st, p.key, p.keyLine, p.keyBlank = inKey, append(p.key[:0], c), p.line, -1
		}
	case inKey:
		switch {
		case isNewline(c):
			p.st = preKey // a line without '=': skipped
		case c == '=':
			p.st, p.value, p.valueBlank = preValue, p.value[:0], -1
		default:
			p.keyBlank = trackBlank(p.keyBlank, c, len(p.key))
			p.key = append(p.key, c)
		}
	case preValue:
		switch {
		case isNewline(c):
			p.push()
		case c == '\'':
			p.st, p.quoteLine = singleQuoted, p.line
		case c == '"':
			p.st, p.quoteLine = doubleQuoted, p.line
		case c == '\\':
			p.st = valueEscape
		case !isBlank(c):
			p.st, p.value = inValue, append(p.value, c)
		}
	case inValue:
		switch {
		case isNewline(c):
			p.trimValue()
			p.push()
		case c == '\\':
			p.st, p.valueBlank = valueEscape, -1
		default:
			p.valueBlank = trackBlank(p.valueBlank, c, len(p.value))
			p.value = append(p.value, c)
		}
	case valueEscape:
		p.st = inValue
		if !isNewline(c) { // an escaped newline joins the lines
			p.value = append(p.value, c)
		}
	case singleQuoted:
		if c == '\'' {
			p.st = preValue
		} else {
			p.value = append(p.value, c)
		}
	case doubleQuoted:
		switch c {
		case '"':
			p.st = preValue
		case '\\':
			p.st = doubleQuoteEscape
		default:
			p.value = append(p.value, c)
		}
	case doubleQuoteEscape:
		p.st = doubleQuoted
		switch {
		case strings.IndexByte("\"\\`$", c) >= 0:
			p.value = append(p.value, c)
		case c != '\n': // as in a shell, the backslash stays
			p.value = append(p.value, '\\', c)
		}
	case inComment:
		switch {
		case c == '\\':
			p.st = commentEscape
		case isNewline(c):
			p.st = preKey
		}
	case commentEscape:
		// Since systemd 254 a backslash does not carry a comment on to
		// the next line.
		if isNewline(c) {
			p.st = preKey
		} else {
			p.st = inComment
		}
	}
}

// trackBlank returns where trailing blanks start once c is appended at
// index n, given where they started before.
func trackBlank(start int, c byte, n int) int {
	switch {
	case !isBlank(c):
		return -1
	case start < 0:
		return n
	}
	return start
}

func (p *parser) trimValue() {
	if p.valueBlank >= 0 {
		p.value = p.value[:p.valueBlank]
	}
}

// end finishes the last line, which may lack its newline.
func (p *parser) end() {
	switch p.st {
	case inValue:
		p.trimValue()
		p.push()
	case preValue, valueEscape:
		p.push()
	case singleQuoted, doubleQuoted, doubleQuoteEscape:
		kind := "double"
		if p.st == singleQuoted {
			kind = "single"
		}
		p.err = fmt.Errorf("%s:%d: the %s quote opened on this line for %s is never closed", p.file, p.quoteLine, kind, clip(p.keyString()))
	}
}

func (p *parser) keyString() string {
	k := p.key
	if p.keyBlank >= 0 {
		k = k[:p.keyBlank]
	}
	return string(k)
}

// push records the assignment just read, after checking it as systemd
// does (which logs and drops a bad one instead), and goes on to the next
// line.
func (p *parser) push() {
	p.st = preKey
	name, value := p.keyString(), string(p.value)
	switch {
	case !ValidName(name):
		p.err = fmt.Errorf("%s:%d: %s is not a variable name (letters, digits and _, not starting with a digit)%s", p.file, p.keyLine, clip(name), nameHint(name))
	case !validText(value):
		p.err = fmt.Errorf("%s:%d: the value of %s is not valid UTF-8 text", p.file, p.keyLine, name)
	case len(name)+1+len(value) >= MaxVarSize:
		p.err = fmt.Errorf("%s:%d: %s is %d bytes; the kernel passes a variable of at most %d", p.file, p.keyLine, name, len(name)+1+len(value), MaxVarSize-1)
	default:
		p.vars = append(p.vars, Var{Name: name, Value: value, Source: fmt.Sprintf("%s:%d", p.file, p.keyLine)})
	}
}

// nameHint says what probably went wrong with an invalid name.
func nameHint(name string) string {
	switch {
	case strings.HasPrefix(name, "\uFEFF"):
		return ": the file starts with a byte-order mark; save it without one"
	case strings.HasPrefix(name, "export ") && ValidName(strings.TrimLeft(name[len("export "):], " \t")):
		return `: drop "export", this is not a shell script`
	}
	return ""
}

// validText is systemd's test of a value: UTF-8 without surrogates or
// the noncharacters U+FDD0..U+FDEF and U+xFFFE, U+xFFFF.
func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r >= 0xFDD0 && r <= 0xFDEF || r&0xFFFE == 0xFFFE {
			return false
		}
	}
	return true
}

// clip quotes s for an error line, shortened if long.
func clip(s string) string {
	const max = 60
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
