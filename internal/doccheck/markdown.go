package doccheck

import (
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// document is what the check needs from a markdown file: its prose (where
// links render), its headings and its reference definitions.
type document struct {
	blocks   []block
	headings []string // inline source of each heading, in order
	defs     []definition
}

// block is consecutive lines of prose, joined with newlines, so that a
// link whose text wraps across lines is seen whole.
type block struct {
	line int // number of its first line, from 1
	text string
}

// definition is a reference definition, [label]: dest.
type definition struct {
	line  int
	label string // normalized, see normLabel
	dest  string
}

var (
	fenceRe   = regexp.MustCompile("^ *(`{3,}|~{3,})(.*)$")
	atxRe     = regexp.MustCompile(`^ {0,3}#{1,6}(?:[ \t]+|$)`)
	atxClose  = regexp.MustCompile(`(?:^|[ \t]+)#+[ \t]*$`)
	setextRe  = regexp.MustCompile(`^ {0,3}(?:=+|-+)[ \t]*$`)
	listRe    = regexp.MustCompile(`^( *)([-*+]|[0-9]{1,9}[.)])([ \t]+|$)`)
	defRe     = regexp.MustCompile(`^ {0,3}\[((?:[^\]\\]|\\.)+)\]:[ \t]*(<[^>\n]*>|\S+)`)
	commentRe = regexp.MustCompile(`(?s)<!--.*?-->`)
)

// parse splits src into blocks of prose, headings and definitions. Fenced
// code blocks (``` or ~~~, at any indentation), indented code blocks (four
// columns past the enclosing list item's content, after a blank line) and
// HTML comments that start a line are left out.
func parse(src string) document {
	var (
		doc      document
		cur      []string // lines of the block being gathered
		curLine  int
		fence    string // the opening fence while inside a fenced block
		indented bool   // inside an indented code block
		comment  bool   // inside an HTML comment that started a line
		listCol  int    // content column of the list item we are in, 0 outside lists
		blank    = true // the previous line was blank (or there was none)
	)
	flush := func() {
		if len(cur) > 0 {
			doc.blocks = append(doc.blocks, block{line: curLine, text: strings.Join(cur, "\n")})
			cur = nil
		}
	}
	lines := strings.Split(src, "\n")
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		n := i + 1
		if comment {
			if strings.Contains(l, "-->") {
				comment = false
			}
			continue
		}
		if fence != "" {
			if m := fenceRe.FindStringSubmatch(l); m != nil && m[1][0] == fence[0] && len(m[1]) >= len(fence) && strings.TrimSpace(m[2]) == "" {
				fence = ""
				blank = true
			}
			continue
		}
		if strings.TrimSpace(l) == "" {
			flush()
			blank = true
			continue
		}
		ind := indent(l)
		if indented && ind >= listCol+4 {
			continue
		}
		indented = false
		if blank && ind >= listCol+4 {
			flush()
			indented = true
			continue
		}
		m := listRe.FindStringSubmatch(l)
		if blank && ind < listCol && m == nil {
			listCol = 0 // a paragraph outside the list ends it
		}
		switch fm := fenceRe.FindStringSubmatch(l); {
		case fm != nil && !(fm[1][0] == '`' && strings.Contains(fm[2], "`")):
			flush()
			fence = fm[1]
			continue
		case strings.HasPrefix(strings.TrimSpace(l), "<!--") && !strings.Contains(l, "-->"):
			flush()
			comment = true
			continue
		case ind <= 3 && atxRe.MatchString(l):
			flush()
			text := strings.TrimLeft(strings.TrimSpace(l), "#")
			text = strings.TrimSpace(atxClose.ReplaceAllString(text, ""))
			doc.headings = append(doc.headings, text)
			doc.blocks = append(doc.blocks, block{line: n, text: text})
			blank = true // a code block may follow a heading directly
			continue
		case setextRe.MatchString(l) && len(cur) > 0 && !blank && listRe.FindString(cur[0]) == "" && !strings.HasPrefix(strings.TrimSpace(cur[0]), "|"):
			// The paragraph above is the heading.
			doc.headings = append(doc.headings, strings.Join(strings.Fields(strings.Join(cur, " ")), " "))
			flush()
			blank = true
			continue
		}
		if m != nil {
			col := len(m[1]) + len(m[2]) + len(m[3])
			if len(m[3]) == 0 || len(m[3]) > 4 {
				col = len(m[1]) + len(m[2]) + 1
			}
			listCol = col
		}
		if d := defRe.FindStringSubmatch(l); d != nil && ind <= 3 {
			doc.defs = append(doc.defs, definition{line: n, label: normLabel(d[1]), dest: strings.Trim(d[2], "<>")})
			blank = false
			continue
		}
		if len(cur) == 0 {
			curLine = n
		}
		cur = append(cur, l)
		blank = false
	}
	flush()
	return doc
}

// indent is the column of l's first non-blank character, tabs counted to
// the next multiple of four.
func indent(l string) int {
	col := 0
	for _, r := range l {
		switch r {
		case ' ':
			col++
		case '\t':
			col += 4 - col%4
		default:
			return col
		}
	}
	return col
}

// normLabel is a reference label as markdown matches it: case and runs of
// white space do not count.
func normLabel(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(s), " "))
}

// link is a link found in a block of prose.
type link struct {
	offset int    // into the block's text
	dest   string // the destination as written; empty for a reference link
	label  string // a reference link's normalized label
}

// links returns the inline links, images and full or collapsed reference
// links ([text][label], [text][]) in s, and those in an <a href> or
// <img src>. Shortcut references ([label]) are not reported: unresolved,
// they are plain text, and resolved, their definition is checked.
func links(s string) []link {
	var out []link
	scanLinks(blankComments(s), 0, &out)
	return out
}

var htmlAttr = regexp.MustCompile(`(?i)^<(?:a|img)\b[^>]*?\s(?:href|src)\s*=\s*"([^"]*)"`)

func scanLinks(s string, base int, out *[]link) {
	for i := 0; i < len(s); {
		switch s[i] {
		case '\\':
			i += 2
		case '`':
			i = skipCode(s, i)
		case '<':
			if end, ok := htmlTag(s, i); ok {
				if m := htmlAttr.FindStringSubmatch(s[i:end]); m != nil {
					*out = append(*out, link{offset: base + i, dest: m[1]})
				}
				i = end
				continue
			}
			i++
		case '[':
			close := matchBracket(s, i)
			if close < 0 {
				i++
				continue
			}
			if dest, end, ok := inlineDest(s, close+1); ok {
				*out = append(*out, link{offset: base + i, dest: dest})
				scanLinks(s[i+1:close], base+i+1, out) // an image inside a link's text
				i = end
				continue
			}
			if close+1 < len(s) && s[close+1] == '[' {
				if k := strings.IndexByte(s[close+2:], ']'); k >= 0 {
					label := s[close+2 : close+2+k]
					if strings.TrimSpace(label) == "" {
						label = s[i+1 : close]
					}
					*out = append(*out, link{offset: base + i, label: normLabel(label)})
					i = close + 2 + k + 1
					continue
				}
			}
			i++
		default:
			i++
		}
	}
}

// skipCode returns the end of the code span whose opening backticks are
// at i, or the end of the backticks when no run of the same length closes
// it (they are then literal).
func skipCode(s string, i int) int {
	n := 0
	for i+n < len(s) && s[i+n] == '`' {
		n++
	}
	for j := i + n; j < len(s); {
		if s[j] != '`' {
			j++
			continue
		}
		m := 0
		for j+m < len(s) && s[j+m] == '`' {
			m++
		}
		if m == n {
			return j + m
		}
		j += m
	}
	return i + n
}

// matchBracket returns the index of the ] that closes the [ at i, or -1.
func matchBracket(s string, i int) int {
	depth := 0
	for j := i; j < len(s); {
		switch s[j] {
		case '\\':
			j += 2
			continue
		case '`':
			j = skipCode(s, j)
			continue
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 {
				return j
			}
		}
		j++
	}
	return -1
}

// inlineDest parses the (destination "title") that may follow a link's
// text at i, and returns the destination and the index after the ).
func inlineDest(s string, i int) (dest string, end int, ok bool) {
	if i >= len(s) || s[i] != '(' {
		return "", 0, false
	}
	j := skipSpace(s, i+1)
	if j < len(s) && s[j] == '<' {
		k := strings.IndexAny(s[j+1:], ">\n")
		if k < 0 || s[j+1+k] != '>' {
			return "", 0, false
		}
		dest, j = s[j+1:j+1+k], j+1+k+1
	} else {
		start, depth := j, 0
	dest:
		for ; j < len(s); j++ {
			switch c := s[j]; {
			case c == '\\':
				j++
			case c == '(':
				depth++
			case c == ')':
				if depth == 0 {
					break dest
				}
				depth--
			case c <= ' ':
				break dest
			}
		}
		dest = s[start:min(j, len(s))]
	}
	j = skipSpace(s, j)
	if j < len(s) && (s[j] == '"' || s[j] == '\'' || s[j] == '(') {
		closer := s[j]
		if closer == '(' {
			closer = ')'
		}
		k := strings.IndexByte(s[j+1:], closer)
		if k < 0 {
			return "", 0, false
		}
		j = skipSpace(s, j+1+k+1)
	}
	if j >= len(s) || s[j] != ')' {
		return "", 0, false
	}
	return dest, j + 1, true
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
		i++
	}
	return i
}

// htmlTag reports whether an HTML tag (or an autolink) starts at i, and
// where it ends. A < followed by anything else is text.
func htmlTag(s string, i int) (end int, ok bool) {
	if i+1 >= len(s) {
		return 0, false
	}
	if c := rune(s[i+1]); !unicode.IsLetter(c) && c != '/' && c != '!' {
		return 0, false
	}
	k := strings.IndexAny(s[i:], ">\n")
	if k < 0 || s[i+k] != '>' {
		return 0, false
	}
	return i + k + 1, true
}

// plainText is the text GitHub renders for inline markdown source: code
// spans keep their content, links their text, images and HTML tags
// vanish, escapes and emphasis markers are dropped.
func plainText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s) && (unicode.IsPunct(rune(s[i+1])) || unicode.IsSymbol(rune(s[i+1]))):
			b.WriteByte(s[i+1])
			i += 2
		case c == '`':
			end, n := skipCode(s, i), 0
			for i+n < len(s) && s[i+n] == '`' {
				n++
			}
			if end > i+n { // a closed span
				b.WriteString(strings.TrimSpace(s[i+n : end-n]))
			} else {
				b.WriteString(s[i:end])
			}
			i = end
		case c == '<':
			if end, ok := htmlTag(s, i); ok {
				i = end
				continue
			}
			b.WriteByte(c)
			i++
		case c == '!' && i+1 < len(s) && s[i+1] == '[':
			if close := matchBracket(s, i+1); close >= 0 {
				if _, end, ok := inlineDest(s, close+1); ok {
					i = end
					continue
				}
			}
			b.WriteByte(c)
			i++
		case c == '[':
			if close := matchBracket(s, i); close >= 0 {
				if _, end, ok := inlineDest(s, close+1); ok {
					b.WriteString(plainText(s[i+1 : close]))
					i = end
					continue
				}
			}
			b.WriteByte(c)
			i++
		case c == '*' || c == '_' && emphasis(s, i):
			i++
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// emphasis reports whether the _ at i delimits emphasis: at the edge of a
// word rather than inside one (snake_case stays as it is).
func emphasis(s string, i int) bool {
	word := func(j int) bool {
		if j < 0 || j >= len(s) {
			return false
		}
		r := rune(s[j])
		return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || r >= 0x80
	}
	return !word(i-1) || !word(i+1)
}

// Slug is the anchor GitHub gives a heading whose rendered text is text:
// lower case, punctuation and symbols dropped (letters, digits, marks, -
// and _ kept), each space a hyphen.
func Slug(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(text)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

var htmlAnchor = regexp.MustCompile(`(?i)<[a-z][a-z0-9]*\b[^>]*?\s(?:id|name)\s*=\s*"([^"]*)"`)

// anchors are the fragments a document answers to: its headings' slugs,
// numbered as GitHub numbers repeats, and the ids and names of its HTML
// elements.
func (d document) anchors() map[string]bool {
	set := map[string]bool{}
	for _, h := range d.headings {
		s := Slug(plainText(h))
		if set[s] {
			i := 1
			for set[s+"-"+strconv.Itoa(i)] {
				i++
			}
			s += "-" + strconv.Itoa(i)
		}
		set[s] = true
	}
	for _, b := range d.blocks {
		for _, m := range htmlAnchor.FindAllStringSubmatch(blankComments(b.text), -1) {
			set[m[1]] = true
		}
	}
	return set
}

// blankComments replaces the HTML comments in s with spaces, keeping its
// line breaks and length, so offsets into s still hold.
func blankComments(s string) string {
	return commentRe.ReplaceAllStringFunc(s, func(c string) string {
		b := []byte(c)
		for i := range b {
			if b[i] != '\n' {
				b[i] = ' '
			}
		}
		return string(b)
	})
}
