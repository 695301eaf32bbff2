package pidfile_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/baton-sh/baton/pidfile"
)

// holdEnv makes the test binary acquire the pidfile it names, say "held",
// and exit when its stdin closes, without releasing the file: a running
// master to the test, then a dead one.
const holdEnv = "BATON_PIDFILE_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		if _, err := pidfile.Acquire(path); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		// A HUP is answered with exit 129 by a handler of its own: the
		// default action would not do, as a HUP inherited as ignored
		// (the tests run under nohup) stays ignored.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			<-hup
			os.Exit(129)
		}()
		fmt.Println("held")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holder starts a copy of this test binary that holds path; calling stop
// ends it, as if the master had been killed.
func holder(t *testing.T, path string) (cmd *exec.Cmd, stop func()) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+path,
		strings.TrimSpace("GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			stdin.Close()
			cmd.Wait()
		})
	}
	t.Cleanup(stop)
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "held\n" {
		t.Fatalf("holder: %q", line)
	}
	return cmd, stop
}

// otherProgram starts a live process that runs another program.
func otherProgram(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

// deadPID returns the PID of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	return cmd.Process.Pid
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkOurs checks that path holds exactly this process's PID, is the
// only file in its directory, and is held.
func checkOurs(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d\n", os.Getpid()); string(b) != want {
		t.Errorf("pidfile holds %q, want %q", b, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o644 {
		t.Errorf("pidfile mode %v, want -rw-r--r--", fi.Mode())
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != filepath.Base(path) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only %q (a temp file left behind?)", names, filepath.Base(path))
	}
	// flock locks belong to open files, so Holder's own open of the file
	// conflicts with ours as with another process's.
	if pid, err := pidfile.Holder(path); err != nil || pid != os.Getpid() {
		t.Errorf("Holder = %d, %v, want this process, %d", pid, err, os.Getpid())
	}
}

func TestAcquire(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string) // nil: no file yet
	}{
		{"new", nil},
		{"left by a dead master", func(t *testing.T, path string) { writeFile(t, path, strconv.Itoa(deadPID(t))+"\n") }},
		{"pid reused by another program", func(t *testing.T, path string) { writeFile(t, path, strconv.Itoa(otherProgram(t))) }},
		{"our own pid, not held", func(t *testing.T, path string) { writeFile(t, path, strconv.Itoa(os.Getpid())) }},
		{"empty", func(t *testing.T, path string) { writeFile(t, path, "") }},
		{"read-only file", func(t *testing.T, path string) {
			writeFile(t, path, "1")
			os.Chmod(path, 0o444)
		}},
		{"held by a master since killed", func(t *testing.T, path string) {
			_, stop := holder(t, path)
			stop()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "baton.pid")
			if tt.setup != nil {
				tt.setup(t, path)
			}
			p, err := pidfile.Acquire(path)
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			defer p.Release()
			checkOurs(t, path)
			if pid, err := pidfile.Read(path); err != nil || pid != os.Getpid() {
				t.Errorf("Read after Acquire = %d, %v, want %d", pid, err, os.Getpid())
			}
		})
	}
}

// TestAcquireHeld checks that a pidfile a live process holds is refused,
// whatever that process is called, and taken over once it has died.
func TestAcquireHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baton.pid")
	other, stop := holder(t, path)
	content, _ := os.ReadFile(path)

	_, err := pidfile.Acquire(path)
	var held *pidfile.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("Acquire of the pidfile of a running master = %v, want a *HeldError", err)
	}
	if held.Path != path || held.PID != other.Process.Pid {
		t.Errorf("HeldError = %+v, want Path %s, PID %d", *held, path, other.Process.Pid)
	}
	for _, want := range []string{path, fmt.Sprintf("pid %d", other.Process.Pid), fmt.Sprintf("kill -TERM %d", other.Process.Pid), "--pidfile"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != string(content) {
		t.Errorf("refused Acquire changed the pidfile from %q to %q", content, b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("refused Acquire left %d files", len(entries))
	}
	if pid, err := pidfile.Holder(path); err != nil || pid != other.Process.Pid {
		t.Errorf("Holder = %d, %v, want %d", pid, err, other.Process.Pid)
	}

	stop() // killed: the file stays, the lock goes
	p, err := pidfile.Acquire(path)
	if err != nil {
		t.Fatalf("Acquire once the holder has died: %v", err)
	}
	defer p.Release()
	checkOurs(t, path)
}

// TestAcquireConcurrently starts many masters on one pidfile at once:
// exactly one wins, every other is told it is held, and the file names
// the winner. flock locks belong to open files, so goroutines compete as
// processes would.
func TestAcquireConcurrently(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "baton.pid")
		if round%2 == 1 {
			writeFile(t, path, strconv.Itoa(deadPID(t))) // a stale file to take over
		}
		var (
			wg    sync.WaitGroup
			won   atomic.Int32
			mu    sync.Mutex
			files []*pidfile.File
		)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := pidfile.Acquire(path)
				var held *pidfile.HeldError
				switch {
				case err == nil:
					won.Add(1)
					mu.Lock()
					files = append(files, p)
					mu.Unlock()
				case !errors.As(err, &held):
					t.Errorf("round %d: Acquire: %v, want success or *HeldError", round, err)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("round %d: %d of 8 concurrent Acquires succeeded, want exactly 1", round, won.Load())
		}
		checkOurs(t, path)
		for _, p := range files {
			if err := p.Release(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestAcquireErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		path string
		want string
	}{
		{filepath.Join(dir, "missing", "baton.pid"), "pidfile " + filepath.Join(dir, "missing", "baton.pid") + ": cannot write in " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{dir, "pidfile " + dir + " exists and is not a regular file: remove it or use another --pidfile"},
	}
	for _, tt := range tests {
		_, err := pidfile.Acquire(tt.path)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Acquire(%s) = %v, want %q", tt.path, err, tt.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed Acquires left %v", entries)
	}
}

// TestContentIsWhole reads the pidfile while masters come and go: a reader
// finds no file or this process's whole PID, never an empty or partial one.
func TestContentIsWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baton.pid")
	done := make(chan struct{})
	var bad []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if pid, err := pidfile.Read(path); !errors.Is(err, fs.ErrNotExist) && (err != nil || pid != os.Getpid()) {
				bad = append(bad, fmt.Sprintf("%d, %v", pid, err))
			}
		}
	}()
	for range 200 {
		p, err := pidfile.Acquire(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Release(); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("a reader saw %d bad reads, first: %s", len(bad), bad[0])
	}
}

func TestHolder(t *testing.T) {
	dir := t.TempDir()
	if _, err := pidfile.Holder(filepath.Join(dir, "missing.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Holder of a missing file: %v, want %v", err, fs.ErrNotExist)
	}

	// A PID reused by another program: the content looks fine, but nobody
	// holds the file.
	stale := filepath.Join(dir, "stale.pid")
	sleeper := otherProgram(t)
	writeFile(t, stale, strconv.Itoa(sleeper)+"\n")
	_, err := pidfile.Holder(stale)
	var se *pidfile.StaleError
	if !errors.As(err, &se) || se.PID != sleeper || se.Path != stale {
		t.Fatalf("Holder of a stale pidfile = %v, want a *StaleError naming pid %d", err, sleeper)
	}
	if !strings.Contains(err.Error(), "no running baton holds it") {
		t.Errorf("StaleError %q does not say that no baton holds it", err)
	}

	held := filepath.Join(dir, "held.pid")
	other, stop := holder(t, held)
	if pid, err := pidfile.Holder(held); err != nil || pid != other.Process.Pid {
		t.Errorf("Holder = %d, %v, want %d", pid, err, other.Process.Pid)
	}
	stop()
	if _, err := pidfile.Holder(held); !errors.As(err, &se) || se.PID != other.Process.Pid {
		t.Errorf("Holder after the holder died = %v, want a *StaleError naming %d", err, other.Process.Pid)
	}
}

// Signal reaches the live master holding the file, and nothing else: not
// a program that took the PID of a master that died, nor anything when
// there is no file.
func TestSignal(t *testing.T) {
	dir := t.TempDir()
	if _, err := pidfile.Signal(filepath.Join(dir, "missing.pid"), syscall.SIGHUP); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Signal with no pidfile: %v, want %v", err, fs.ErrNotExist)
	}

	stale := filepath.Join(dir, "stale.pid")
	sleeper := otherProgram(t)
	writeFile(t, stale, strconv.Itoa(sleeper)+"\n")
	var se *pidfile.StaleError
	if _, err := pidfile.Signal(stale, syscall.SIGTERM); !errors.As(err, &se) {
		t.Errorf("Signal of a stale pidfile: %v, want a *StaleError", err)
	}
	if state := procState(t, sleeper); state == "" || state == "Z" {
		t.Errorf("the program holding the stale pidfile's PID is %q after Signal, want it untouched", state)
	}

	held := filepath.Join(dir, "held.pid")
	master, _ := holder(t, held)
	pid, err := pidfile.Signal(held, syscall.SIGHUP)
	if err != nil || pid != master.Process.Pid {
		t.Fatalf("Signal = %d, %v, want the holder's pid %d", pid, err, master.Process.Pid)
	}
	err = master.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 129 {
		t.Errorf("the holder ended with %v, want exit 129 (its answer to SIGHUP)", err)
	}
}

// procState is the state letter /proc gives pid, "" if it is gone.
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	state, _, _ := strings.Cut(rest, " ")
	return state
}

func TestRelease(t *testing.T) {
	tests := []struct {
		name    string
		meddle  func(t *testing.T, path string) // after Acquire
		removed bool
		content string // what must be left when not removed
	}{
		{name: "ours", removed: true},
		{name: "removed by someone else", meddle: func(t *testing.T, path string) { os.Remove(path) }, removed: true},
		{name: "replaced by someone else", meddle: func(t *testing.T, path string) {
			os.Remove(path)
			writeFile(t, path, "4242\n")
		}, content: "4242\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "baton.pid")
			p, err := pidfile.Acquire(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.meddle != nil {
				tt.meddle(t, path)
			}
			if err := p.Release(); err != nil {
				t.Errorf("Release: %v", err)
			}
			_, statErr := os.Stat(path)
			if gone := errors.Is(statErr, fs.ErrNotExist); gone != tt.removed {
				t.Errorf("after Release, the pidfile is gone: %v, want %v", gone, tt.removed)
			}
			if !tt.removed {
				if b, _ := os.ReadFile(path); string(b) != tt.content {
					t.Errorf("Release changed the file to %q", b)
				}
			}
			if err := p.Release(); err != nil {
				t.Errorf("second Release: %v", err)
			}
		})
	}
}

func TestRead(t *testing.T) {
	tests := []struct {
		content string
		want    int // 0: an error
	}{
		{"123\n", 123},
		{"123", 123},
		{"  42 \n\n", 42},
		{"\t7\r\n", 7},
		{"1", 1},
		{"", 0},
		{"\n", 0},
		{"0\n", 0},
		{"-5\n", 0},
		{"+5\n", 5},
		{"abc\n", 0},
		{"12 34\n", 0},
		{"12\n34\n", 0},
		{"0x10\n", 0},
		{"1.5\n", 0},
		{"99999999999999999999999\n", 0},
		{"\x00\x01\x02", 0},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		path := filepath.Join(dir, fmt.Sprintf("%d.pid", i))
		writeFile(t, path, tt.content)
		pid, err := pidfile.Read(path)
		if tt.want != 0 {
			if err != nil || pid != tt.want {
				t.Errorf("Read(%q) = %d, %v, want %d", tt.content, pid, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("Read(%q) = %d, want an error", tt.content, pid)
			continue
		}
		if want := "pidfile " + path + " does not hold a PID"; err.Error() != want || pid != 0 {
			t.Errorf("Read(%q) = %d, %q, want 0, %q", tt.content, pid, err, want)
		}
	}

	if _, err := pidfile.Read(filepath.Join(dir, "missing.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a missing file: %v, want %v", err, fs.ErrNotExist)
	}
}

// --pidfile naming some other file by mistake must not destroy it, nor
// follow a symbolic link.
func TestAcquireRefusesWhatIsNotAPidfile(t *testing.T) {
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, []byte("important data\n"), 0o644)
	link := filepath.Join(dir, "link.pid")
	os.Symlink(notes, link)
	stale := filepath.Join(dir, "stale.pid")
	os.WriteFile(stale, []byte("999999\n"), 0o644)
	empty := filepath.Join(dir, "empty.pid")
	os.WriteFile(empty, nil, 0o644)
	garbage := filepath.Join(dir, "garbage.pid")
	os.WriteFile(garbage, []byte("999999999999999999999\n\n\n"), 0o644)
	for _, tc := range []struct {
		path, want string // want: "" for success, else a part of the error
	}{
		{notes, "holds something other than a PID"},
		{garbage, "holds something other than a PID"},
		{link, "symbolic link"},
		{stale, ""},
		{empty, ""},
	} {
		pf, err := pidfile.Acquire(tc.path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Acquire(%s): %v", filepath.Base(tc.path), err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Acquire(%s) = %v, want an error saying %q", filepath.Base(tc.path), err, tc.want)
		}
		if pf != nil {
			pf.Release()
		}
	}
	if b, _ := os.ReadFile(notes); string(b) != "important data\n" {
		t.Fatalf("notes.txt now holds %q", b)
	}
}
