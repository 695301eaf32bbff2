package envfile

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// kv writes vars as NAME=VALUE lines for comparison.
func kv(vars []Var) string {
	var b strings.Builder
	for _, v := range vars {
		b.WriteString(v.Name + "=" + v.Value + "\n")
	}
	return b.String()
}

// TestParse walks systemd's EnvironmentFile= syntax: each case is a file
// and the variables systemd's parser (src/basic/env-file.c, 254 and
// later) makes of it, written as NAME=VALUE lines.
func TestParse(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty file", "", ""},
		{"blank lines only", "\n  \n\t\n", ""},
		{"one line, no newline", "A=1", "A=1\n"},
		{"lines", "A=1\nB=2\n", "A=1\nB=2\n"},
		{"blanks around name and value", "  A \t=  1  \n", "A=1\n"},
		{"inner blanks kept", "A=  hello   world  ", "A=hello   world\n"},
		{"comments", "# c\n; c\n  # indented\n\t; too\nA=1", "A=1\n"},
		{"hash after a value is kept", "A=1 # not a comment", "A=1 # not a comment\n"},
		{"semicolon after a value is kept", "A=1;2", "A=1;2\n"},
		{"comment ends at its line despite a backslash", "# c \\\nA=1\n; d\\\nB=2", "A=1\nB=2\n"},
		{"comment with escaped characters", "# a\\b \\\\\nA=1", "A=1\n"},
		{"line without = skipped", "just words\nA=1\nB\n", "A=1\n"},
		{"= as the first character is part of a name without =", "=foo\nA=1", "A=1\n"},
		{"empty value", "A=\nB=   \nC=", "A=\nB=\nC=\n"},
		{"= in value", "A==b\nB=b=c", "A==b\nB=b=c\n"},
		{"no expansion", "A=$HOME ${X} `id`", "A=$HOME ${X} `id`\n"},
		{"later assignment listed too", "A=1\nA=2", "A=1\nA=2\n"},
		{"CRLF", "A=1\r\nB=2\r\n", "A=1\nB=2\n"},
		{"CR ends an empty value", "A=\r\nB=x", "A=\nB=x\n"},
		{"UTF-8", "A=héllo wörld ✓", "A=héllo wörld ✓\n"},

		{"single quotes keep blanks", "A='  x  y '", "A=  x  y \n"},
		{"single quotes keep backslashes", `A='a\nb\\c\'`, `A=a\nb\\c\` + "\n"},
		{"single quotes span lines", "A='a\nb'\nB=2", "A=a\nb\nB=2\n"},
		{"double quote in single quotes", `A='a"b'`, `A=a"b` + "\n"},
		{"double quotes keep blanks", `A="  x  y "`, "A=  x  y \n"},
		{"double quotes span lines", "A=\"a\n b\"\nB=2", "A=a\n b\nB=2\n"},
		{"double quotes keep CR", "A=\"x\r\ny\"", "A=x\r\ny\n"},
		{`\" in double quotes`, `A="a\"b"`, `A=a"b` + "\n"},
		{`\\ in double quotes`, `A="a\\b"`, `A=a\b` + "\n"},
		{`\$ in double quotes`, `A="a\$b"`, `A=a$b` + "\n"},
		{"\\` in double quotes", "A=\"a\\`b\"", "A=a`b\n"},
		{`other escapes in double quotes are kept`, `A="a\nb\tc\'d"`, `A=a\nb\tc\'d` + "\n"},
		{"continuation in double quotes", "A=\"a\\\nb\"", "A=ab\n"},
		{"single quote in double quotes", `A="a'b"`, "A=a'b\n"},
		{"comment characters in quotes", `A="# x ; y"`, "A=# x ; y\n"},

		{"escaped blank", `A=a\ b`, "A=a b\n"},
		{"escaped backslash", `A=a\\b`, `A=a\b` + "\n"},
		{"escaped letter", `A=a\nb`, "A=anb\n"},
		{"escaped quote first", `A=\'x'`, "A='x'\n"},
		{"escaped trailing blank kept", "A=\\  \n", "A= \n"},
		{"escaped blank before trailing blanks", "A=x\\   ", "A=x \n"},
		{"continuation", "A=a\\\nb", "A=ab\n"},
		{"continuation keeps the next line's blanks", "A=a \\\n  b  \nB=1", "A=a   b\nB=1\n"},
		{"continuation right after =", "A=\\\nb", "A=b\n"},
		{"CR after a backslash is eaten; LF still ends the line", "A=a\\\r\nb", "A=a\n"},
		{"backslash at end of file", "A=1\\", "A=1\n"},
		{"quote after a continuation is kept", "A=\"x\"\\\n'y", "A=x'y\n"},

		{"quotes after the first character are kept", `A=x "y" 'z'`, `A=x "y" 'z'` + "\n"},
		{"text after a closing quote is appended", `A="x"y`, "A=xy\n"},
		{"quoted parts join, blanks between skipped", `A="x" 'y'  "z" w v`, "A=xyzw v\n"},
		{"blanks after a closing quote dropped", "A=\"x\"  \t\nB=1", "A=x\nB=1\n"},
		{"blanks before an opening quote dropped", `A=  "x"`, "A=x\n"},
		{"hash after a closing quote is appended", `A="x"#y`, "A=x#y\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars, err := Parse("app.env", []byte(tc.in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if got := kv(vars); got != tc.want {
				t.Errorf("Parse(%q) =\n%q\nwant\n%q", tc.in, got, tc.want)
			}
		})
	}
}

// TestParseSource: each assignment names the file and the line its name
// is on, blank and comment lines and multi-line values counted.
func TestParseSource(t *testing.T) {
	in := "A=1\n\n# c\nB='x\ny'\n  C=\\\n2\n\r\nD=4"
	vars, err := Parse("/etc/app.env", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.Name+"@"+v.Source)
	}
	want := "A@/etc/app.env:1 B@/etc/app.env:4 C@/etc/app.env:6 D@/etc/app.env:9"
	if strings.Join(got, " ") != want {
		t.Errorf("sources = %s, want %s", strings.Join(got, " "), want)
	}
}

// TestParseErrors: what systemd drops with a log line, or reads to the
// end of the file, fails with one line naming the file and line.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"blank in name", "A=1\nA B=2", `^app\.env:2: "A B" is not a variable name \(letters, digits and _, not starting with a digit\)$`},
		{"export", "\n\nexport PATH=/bin", `^app\.env:3: "export PATH" is not a variable name .*: drop "export", this is not a shell script$`},
		{"leading digit", "1A=x", `^app\.env:1: "1A" is not a variable name`},
		{"dash", "# db\nDATABASE-URL=x", `^app\.env:2: "DATABASE-URL" is not a variable name`},
		{"dot", "a.b=1", `^app\.env:1: "a\.b" is not a variable name`},
		{"non-ASCII name", "Ä=1", `^app\.env:1: "Ä" is not a variable name`},
		{"= first", "=a=b", `^app\.env:1: "=a" is not a variable name`},
		{"byte-order mark", "\uFEFFA=1", `^app\.env:1: "\\ufeffA" is not a variable name .*: the file starts with a byte-order mark; save it without one$`},
		{"long name clipped", strings.Repeat("x-", 50) + "=1", `^app\.env:1: "(x-){30}"… is not a variable name`},
		{"value not UTF-8", "A=ok\nB=\xff\xfe", `^app\.env:2: the value of B is not valid UTF-8 text$`},
		{"value with a noncharacter", "A=\uFDD0", `^app\.env:1: the value of A is not valid UTF-8 text$`},
		{"value with U+FFFF", "A=x\uFFFF", `^app\.env:1: the value of A is not valid UTF-8 text$`},
		{"NUL byte", "A=1\nB=2\x00", `^app\.env:2: a NUL byte: an environment file is text$`},
		{"unclosed double quote", "A=1\nB=\"x\nC=2\n", `^app\.env:2: the double quote opened on this line for "B" is never closed$`},
		{"unclosed double quote after an escape", "A=\"x\\", `^app\.env:1: the double quote opened on this line for "A" is never closed$`},
		{"unclosed single quote", "A='x\n\nB=2", `^app\.env:1: the single quote opened on this line for "A" is never closed$`},
		{"unclosed quote on a later line of the value", "A='x\ny' \"z\n", `^app\.env:2: the double quote opened on this line for "A" is never closed$`},
		{"error after a multi-line value", "A='x\ny'\nB C=1", `^app\.env:3: "B C" is not a variable name`},
		{"value beyond the kernel's limit", "A=1\nBIG=" + strings.Repeat("x", MaxVarSize-4), `^app\.env:2: BIG is 131072 bytes; the kernel passes a variable of at most 131071$`},
		{"value beyond the limit, joined lines", "BIG=" + strings.Repeat("x\\\n", MaxVarSize), `^app\.env:1: BIG is \d+ bytes; the kernel passes a variable of at most 131071$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars, err := Parse("app.env", []byte(tc.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want an error", tc.in, kv(vars))
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("Parse(%q): %v\nwant an error matching %s", tc.in, err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is more than one line: %q", err)
			}
		})
	}
}

// quote writes value so that Parse reads it back as it is: in double
// quotes, with ", \, ` and $ escaped.
func quote(value string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(value); i++ {
		if strings.IndexByte("\"\\`$", value[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(value[i])
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzParse: whatever the input, Parse does not panic, and what it
// accepts is valid names and UTF-8 values on lines that exist, which read
// back unchanged once written out quoted.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"A=1\nB='x y'\n", `A="a\"b\\c\$d"`, "# c\\\nA=x\\\ny", "A=\"x\" 'y' z\r\n", "export A=1", "A='"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		vars, err := Parse("f", in)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error %q: want one line starting with f:LINE:", err)
			}
			return
		}
		lines := 1 + strings.Count(string(in), "\n")
		var out strings.Builder
		for _, v := range vars {
			if !ValidName(v.Name) || !validText(v.Value) {
				t.Fatalf("accepted %q=%q", v.Name, v.Value)
			}
			n, ok := strings.CutPrefix(v.Source, "f:")
			line, err := strconv.Atoi(n)
			if !ok || err != nil || line < 1 || line > lines {
				t.Fatalf("source %q of %s: not a line of the %d-line input", v.Source, v.Name, lines)
			}
			out.WriteString(v.Name + "=" + quote(v.Value) + "\n")
		}
		again, err := Parse("f", []byte(out.String()))
		if err != nil {
			t.Fatalf("written out as %q: %v", out.String(), err)
		}
		if kv(again) != kv(vars) {
			t.Fatalf("read back as\n%q\nwant\n%q", kv(again), kv(vars))
		}
	})
}
