package logging_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/logging"
)

// childEnv makes the test binary log to its stderr, which the test has
// made a pipe nobody reads from any more, and report on stdout.
const childEnv = "BATON_LOGGING_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		lg, err := logging.New(os.Stderr, "json", "info")
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		for i := range 100 {
			lg.Info().Int("i", i).Msg("line")
		}
		lg.Close()
		fmt.Printf("alive, dropped %d\n", lg.Dropped())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// stalledPipe is a pipe of the smallest size whose reader does not read
// until the test says so.
func stalledPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatalf("F_SETPIPE_SZ: %v", err)
	}
	return r, w
}

// TestStalledReader logs far more than the pipe and the queue hold while
// nobody reads: every call returns at once, the excess is dropped and
// counted, and once the reader is back one line says how many were lost,
// so that the lines read plus the count make up every line logged.
func TestStalledReader(t *testing.T) {
	r, w := stalledPipe(t)
	lg, err := logging.New(w, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	logged := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		for i := range n {
			lg.Info().Int("i", i).Msg("line")
		}
		logged <- time.Since(start)
	}()
	select {
	case d := <-logged:
		t.Logf("%d lines logged in %s with nobody reading", n, d)
	case <-time.After(20 * time.Second):
		t.Fatal("logging blocked on a reader that does not read")
	}
	dropped := lg.Dropped()
	if dropped == 0 {
		t.Fatalf("no line dropped, though %d lines cannot fit in a 4 KiB pipe and a %d-byte queue", n, logging.QueueBytes)
	}

	// The reader is back.
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	read, reported, notices := 0, uint64(0), 0
	for read+int(reported) < n {
		select {
		case line := <-lines:
			var e struct {
				Message string
				I       *int
				Dropped uint64
				Level   string
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("not a JSON log line: %q", line)
			}
			switch {
			case e.Message == "line" && e.I != nil:
				if *e.I != read+int(reported) {
					t.Fatalf("line %d after %d lines read and %d reported dropped: a gap without its notice", *e.I, read, reported)
				}
				read++
			case strings.HasPrefix(e.Message, "log lines dropped") && e.Level == "warn" && e.Dropped > 0:
				reported += e.Dropped
				notices++
			default:
				t.Fatalf("unexpected line %q", line)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("read %d lines, %d reported dropped, of %d: the rest did not come within 10s", read, reported, n)
		}
	}
	if reported != dropped {
		t.Errorf("notices report %d lines dropped, Dropped says %d", reported, dropped)
	}
	if !lg.Close() {
		t.Error("Close did not flush with the reader reading")
	}
	t.Logf("read %d lines; %d notices reported the %d dropped", read, notices, reported)
}

// TestCloseIsBounded: a reader that never comes back cannot hold up Close.
func TestCloseIsBounded(t *testing.T) {
	_, w := stalledPipe(t)
	lg, err := logging.New(w, "console", "info")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		lg.Info().Int("i", i).Msg("filling the pipe")
	}
	fmt.Fprintln(lg.Stderr(), "baton: the last line")
	start := time.Now()
	if lg.Close() {
		t.Error("Close reported a full flush to a reader that does not read")
	}
	if d := time.Since(start); d > logging.FlushTimeout+2*time.Second {
		t.Errorf("Close took %s, want about %s", d, logging.FlushTimeout)
	}
}

// TestLinesInOrder: with a reader, Close flushes everything, log events
// and raw lines in the order they were written.
func TestLinesInOrder(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(r); got <- b }()
	lg, err := logging.New(w, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	lg.Info().Msg("first")
	lg.Debug().Msg("second")
	fmt.Fprintln(lg.Stderr(), "baton: third")
	if !lg.Close() {
		t.Fatal("Close did not flush")
	}
	w.Close()
	out := string(<-got)
	i1, i2, i3 := strings.Index(out, `"first"`), strings.Index(out, `"second"`), strings.Index(out, "baton: third\n")
	if i1 < 0 || i2 < i1 || i3 < i2 || lg.Dropped() != 0 {
		t.Fatalf("output %q (dropped %d), want first, second, third in order", out, lg.Dropped())
	}
}

// TestReaderGone runs a process whose stderr is a pipe with no reader
// left: its log writes fail with EPIPE instead of killing it with
// SIGPIPE, which is what the Go runtime does by default on fd 2.
func TestReaderGone(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1",
		strings.TrimSpace("GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stderr = w
	out, err := cmd.Output()
	w.Close()
	if err != nil {
		t.Fatalf("child logging to a broken pipe: %v (%s), want exit 0", err, cmd.ProcessState)
	}
	if got := strings.TrimSpace(string(out)); got != "alive, dropped 100" {
		t.Fatalf("child said %q, want it alive with its 100 lines counted as dropped", got)
	}
}

func TestNewRejects(t *testing.T) {
	for _, tt := range []struct{ format, level, want string }{
		{"xml", "info", `--log-format "xml"`},
		{"json", "loud", `--log-level "loud"`},
		{"json", "", `--log-level ""`},
	} {
		if _, err := logging.New(os.Stderr, tt.format, tt.level); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q, %q) = %v, want an error naming %s", tt.format, tt.level, err, tt.want)
		}
	}
}

// TestOutputLeavesRoomForBaton: worker output flooding a stalled reader
// fills the queue only up to OutputQueueBytes, so baton's own lines
// logged after the flood are still queued and come out, in order.
func TestOutputLeavesRoomForBaton(t *testing.T) {
	r, w := stalledPipe(t)
	lg, err := logging.New(w, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	out := lg.Output()
	line := []byte(`{"level":"info","component":"baton","event":"worker_output","message":"` + strings.Repeat("x", 200) + `"}` + "\n")
	for range 10000 { // 2 MB: eight times the queue
		out.Write(line)
	}
	flooded := lg.Dropped()
	for i := range 100 {
		lg.Info().Int("i", i).Msg("baton's own")
	}
	if d := lg.Dropped(); d != flooded {
		t.Fatalf("%d of baton's own lines dropped behind a flood of worker output", d-flooded)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(r); got <- b }()
	if !lg.Close() {
		t.Fatal("Close did not flush")
	}
	w.Close()
	b := <-got
	if n := strings.Count(string(b), `"baton's own"`); n != 100 {
		t.Fatalf("%d of baton's 100 own lines came out", n)
	}
	t.Logf("worker lines dropped: %d of 10000; baton's own: all 100 out", flooded)
}
