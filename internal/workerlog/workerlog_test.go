//go:build linux

package workerlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type line struct {
	text string
	cut  bool
}

func split(s *Splitter, chunks ...string) []line {
	var got []line
	emit := func(b []byte, cut bool) { got = append(got, line{string(b), cut}) }
	for _, c := range chunks {
		s.Feed([]byte(c), emit)
	}
	return got
}

func TestSplitterLines(t *testing.T) {
	long := strings.Repeat("x", MaxLine)
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []line
		left   string // the partial line held after the chunks
	}{
		{"one line", []string{"hello\n"}, []line{{"hello", false}}, ""},
		{"several lines in one write", []string{"a\nb\n\nc\n"}, []line{{"a", false}, {"b", false}, {"", false}, {"c", false}}, ""},
		{"a line across writes", []string{"hel", "lo wor", "ld\nnext"}, []line{{"hello world", false}}, "next"},
		{"CRLF", []string{"dos\r\n"}, []line{{"dos", false}}, ""},
		{"exactly MaxLine", []string{long + "\n"}, []line{{long, false}}, ""},
		{"one byte over, in one write", []string{long + "yz\nafter\n"}, []line{{long, true}, {"after", false}}, ""},
		{"over, across writes: the rest is discarded up to the newline", []string{long[:100], long[100:] + "y", "zzz", "zz\nafter\n"},
			[]line{{long, true}, {"after", false}}, ""},
		{"cut before a split UTF-8 character", []string{long[:MaxLine-1] + "é" + "\n"}, []line{{long[:MaxLine-1], true}}, ""},
		{"a line held without its newline", []string{"no newline yet"}, nil, "no newline yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSplitter(State{})
			got := split(s, tc.chunks...)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("lines %.200v, want %.200v", got, tc.want)
			}
			if st := s.State(); string(st.Pending) != tc.left || st.Cut {
				t.Fatalf("state %+v, want pending %q", st, tc.left)
			}
		})
	}
}

func TestSplitterEnd(t *testing.T) {
	s := NewSplitter(State{})
	got := split(s, "complete\nunfinished")
	s.End(func(b []byte, cut bool) { got = append(got, line{string(b), cut}) })
	if fmt.Sprint(got) != fmt.Sprint([]line{{"complete", false}, {"unfinished", false}}) {
		t.Fatalf("got %v", got)
	}
}

// A stream handed over (State) carries on in a new Splitter as if
// nothing had happened: a partial line, or the rest of a cut one.
func TestSplitterState(t *testing.T) {
	a := NewSplitter(State{})
	split(a, "first half ")
	b := NewSplitter(a.State())
	if got := split(b, "second half\n"); fmt.Sprint(got) != fmt.Sprint([]line{{"first half second half", false}}) {
		t.Fatalf("got %v", got)
	}
	c := NewSplitter(State{})
	split(c, strings.Repeat("y", MaxLine+10))
	if !c.State().Cut {
		t.Fatal("a cut line's state does not say so")
	}
	d := NewSplitter(c.State())
	if got := split(d, "rest of the long line\nnext\n"); fmt.Sprint(got) != fmt.Sprint([]line{{"next", false}}) {
		t.Fatalf("got %v", got)
	}
}

func TestLimiter(t *testing.T) {
	cfg := Config{Rate: 10}
	l := NewLimiter(cfg)
	now := time.Unix(1000, 0)
	passed := 0
	for range 150 { // the burst is 100 lines
		if ok, _ := l.allow(now); ok {
			passed++
		}
	}
	if passed != 10*BurstSeconds || l.Dropped() != 50 {
		t.Fatalf("%d passed, %d dropped; want the burst of %d, then drops", passed, l.Dropped(), 10*BurstSeconds)
	}
	// A tenth of a second later one line has come back, and the drops
	// are reported before it.
	ok, report := l.allow(now.Add(100 * time.Millisecond))
	if !ok || report != 50 {
		t.Fatalf("after 100ms: ok %v, report %d; want a line through and 50 reported", ok, report)
	}
	// Drops go on: reported again no sooner than a second after.
	now = now.Add(100 * time.Millisecond)
	reports := 0
	for i := range 300 { // 3 s at 100 lines a second: 10 of each 100 pass
		ok, n := l.allow(now.Add(time.Duration(i) * 10 * time.Millisecond))
		if n > 0 {
			reports++
			if !ok {
				t.Fatal("a report came with a dropped line")
			}
		}
	}
	if reports < 2 || reports > 3 {
		t.Fatalf("%d drop reports in 3s, want one a second", reports)
	}
	if n := l.flush(); n == 0 || l.Dropped() != 0 {
		t.Fatalf("flush %d, then %d; want the rest once", n, l.Dropped())
	}
	if NewLimiter(Config{Rate: -1}) != nil {
		t.Fatal("a negative rate limits")
	}
	if d := NewLimiter(Config{}); d.rate != DefaultRate {
		t.Fatalf("zero rate is %v a second, want %d", d.rate, DefaultRate)
	}
}

func TestJSONEvent(t *testing.T) {
	cfg := &Config{}
	at := time.Date(2025, 1, 2, 3, 4, 5, 6e6, time.UTC)
	raw := []byte("a \"quoted\"\tline\\ with \x01 control, é, and invalid \xff bytes")
	b := AppendLine(nil, cfg, at, Source{Gen: 3, Index: 1, PID: 4242}, Stderr, raw, true)
	if !bytes.HasSuffix(b, []byte("}\n")) || bytes.Count(b, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", b)
	}
	var e map[string]any
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	want := map[string]any{"level": "info", "component": "baton", "event": "worker_output", "gen": 3.0, "index": 1.0,
		"pid": 4242.0, "stream": "stderr", "cut": true, "time": "2025-01-02T03:04:05.006Z",
		"message": "a \"quoted\"\tline\\ with \x01 control, é, and invalid \ufffd bytes"}
	if fmt.Sprint(e) != fmt.Sprint(want) {
		t.Fatalf("got  %v\nwant %v", e, want)
	}
	b = AppendDropped(nil, &Config{Process: "keeper"}, at, Source{Gen: 3, Index: -1, PID: 4242}, 17)
	e = nil
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if e["event"] != "worker_output_dropped" || e["dropped"] != 17.0 || e["level"] != "warn" || e["process"] != "keeper" {
		t.Fatalf("drop report %v", e)
	}
	if _, ok := e["index"]; ok {
		t.Fatalf("an unknown index is logged: %v", e)
	}
}

func TestConsoleEvent(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6e6, time.Local)
	b := AppendLine(nil, &Config{Console: true}, at, Source{Gen: 2, Index: 0, PID: 77}, Stdout, []byte("listening on :8080"), false)
	if got, want := string(b), "03:04:05.006 2/0/77 out| listening on :8080\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	b = AppendLine(nil, &Config{Console: true}, at, Source{Gen: 2, Index: -1, PID: 77}, Stderr, []byte("long"), true)
	if got, want := string(b), "03:04:05.006 2/?/77 err| long [cut]\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// events collects what a Reader writes.
type events struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (e *events) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		panic(fmt.Sprintf("%v: %q", err, p))
	}
	e.mu.Lock()
	e.lines = append(e.lines, m)
	e.mu.Unlock()
	return len(p), nil
}

func (e *events) messages() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, m := range e.lines {
		if m["event"] == EventOutput {
			out = append(out, m["message"].(string))
		}
	}
	return out
}

func pipe(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(p[0], true)
	return os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
}

// A Reader logs every line until end of file, the last one without its
// newline too.
func TestReaderToEOF(t *testing.T) {
	r, w := pipe(t)
	defer r.Close()
	var ev events
	cfg := &Config{Out: &ev}
	rd := NewReader(r, cfg, Source{Gen: 1, PID: 9}, Stdout, NewLimiter(*cfg), State{})
	done := make(chan error)
	go func() { done <- rd.Run() }()
	fmt.Fprint(w, "one\ntwo\nthree")
	w.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := ev.messages(); fmt.Sprint(got) != "[one two three]" {
		t.Fatalf("got %q", got)
	}
}

// Stopped while a writer floods its pipe, a Reader stops promptly, and a
// new Reader of the same pipe from its State carries on: no line lost,
// none twice, none mangled. This is what an in-place upgrade does.
func TestReaderStopAndCarryOn(t *testing.T) {
	r, w := pipe(t)
	defer r.Close()
	var ev events
	cfg := &Config{Out: &ev, Rate: -1}
	const n = 30000
	go func() {
		bw := make([]byte, 0, 64<<10)
		for i := range n {
			bw = fmt.Appendf(bw, "line %d of the flood\n", i)
			if len(bw) > 60<<10 || i == n-1 {
				w.Write(bw)
				bw = bw[:0]
			}
		}
		w.Close()
	}()
	rd := NewReader(r, cfg, Source{Gen: 1, PID: 9}, Stdout, nil, State{})
	stops := 0
	for {
		done := make(chan error)
		go func() { done <- rd.Run() }()
		time.Sleep(5 * time.Millisecond) // let it read some
		rd.Stop()
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the reader did not stop within 5s of Stop while the pipe was flooded")
		}
		if err == nil {
			break
		}
		stops++
		// Carry on as a new image would: a new Reader of the same pipe.
		st := rd.State()
		rd = NewReader(r, cfg, Source{Gen: 1, PID: 9}, Stdout, nil, st)
		rd.Resume()
	}
	got := ev.messages()
	if len(got) != n {
		t.Fatalf("%d lines after %d stops, want %d", len(got), stops, n)
	}
	for i, m := range got {
		if m != fmt.Sprintf("line %d of the flood", i) {
			t.Fatalf("line %d is %q", i, m)
		}
	}
	t.Logf("%d lines, stopped and carried on %d times", n, stops)
}

// A worker over its rate loses lines, counted and reported.
func TestReaderRate(t *testing.T) {
	r, w := pipe(t)
	defer r.Close()
	var ev events
	cfg := &Config{Out: &ev, Rate: 10}
	done := make(chan error)
	go func() { done <- NewReader(r, cfg, Source{Gen: 1, PID: 9}, Stderr, NewLimiter(*cfg), State{}).Run() }()
	for i := range 1000 {
		fmt.Fprintf(w, "%d\n", i)
	}
	w.Close()
	<-done
	var dropped float64
	for _, m := range ev.lines {
		if m["event"] == EventDropped {
			dropped += m["dropped"].(float64)
		}
	}
	logged := len(ev.messages())
	if logged < 100 || logged > 102 || int(dropped)+logged != 1000 {
		t.Fatalf("%d logged, %v reported dropped; want the burst of 100 and the rest reported", logged, dropped)
	}
}

func TestTerminalText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text, tab\there", "plain text, tab\there"},
		{"\x1b[31mred\x1b[0m", "\x1b[31mred\x1b[0m\x1b[0m"},
		{"\x1b[1;32mbold green", "\x1b[1;32mbold green\x1b[0m"},
		{"clear\x1b[2J screen", `clear\x1b[2J screen`},
		{"title\x1b]0;pwned\x07", `title\x1b]0;pwned\x07`},
		{"cr\rover", `cr\x0dover`},
		{"nul\x00 del\x7f bell\x07", `nul\x00 del\x7f bell\x07`},
		{"cut short \x1b[3", `cut short \x1b[3`},
		{"utf-8 é ✓ and invalid \xff", `utf-8 é ✓ and invalid \xff`},
		// C1 controls: CSI as U+009B (in UTF-8) or as the lone byte a
		// Latin-1 terminal reads, NEL ending the line.
		{"csi \u009b2J clear", `csi \xc2\x9b2J clear`},
		{"raw csi \x9b2J", `raw csi \x9b2J`},
		{"nel\u0085forged", `nel\xc2\x85forged`},
		{"nbsp\u00a0ok", "nbsp\u00a0ok"},
	}
	for _, tt := range tests {
		if got := string(appendTerminalText(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("appendTerminalText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
