package pidfile_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/baton-sh/baton/pidfile"
)

// holdEnv makes the test binary wait for its stdin to close and exit,
// instead of running tests: a live process running the same program as
// this one, the way a running master looks to a second one.
const holdEnv = "BATON_PIDFILE_TEST_HOLD"

func TestMain(m *testing.M) {
	if os.Getenv(holdEnv) != "" {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sameProgram starts a copy of this test binary and returns it; closing
// stop ends it.
func sameProgram(t *testing.T) (cmd *exec.Cmd, stop func()) {
	t.Helper()
	// The executable's real path, so that the child's command name
	// (/proc/PID/comm) is this binary's, as for a second master.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"=1",
		strings.TrimSpace("GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	stdin, err := cmd.StdinPipe()
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

// checkOurs checks that path holds exactly this process's PID and is the
// only file in its directory.
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
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string) // nil: no file yet
	}{
		{"new", nil},
		{"our own pid", func(t *testing.T, path string) { writeFile(t, path, strconv.Itoa(os.Getpid())) }},
		{"dead process", func(t *testing.T, path string) { writeFile(t, path, strconv.Itoa(deadPID(t))+"\n") }},
		{"pid reused by another program", func(t *testing.T, path string) { writeFile(t, path, strconv.Itoa(otherProgram(t))) }},
		{"garbage", func(t *testing.T, path string) { writeFile(t, path, "not a pid\n") }},
		{"empty", func(t *testing.T, path string) { writeFile(t, path, "") }},
		{"longer content", func(t *testing.T, path string) { writeFile(t, path, "999999999999999999999\n\n\n") }},
		{"read-only file", func(t *testing.T, path string) {
			writeFile(t, path, "1")
			os.Chmod(path, 0o444)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "baton.pid")
			if tt.setup != nil {
				tt.setup(t, path)
			}
			if err := pidfile.Write(path); err != nil {
				t.Fatalf("Write: %v", err)
			}
			checkOurs(t, path)
			if pid, err := pidfile.Read(path); err != nil || pid != os.Getpid() {
				t.Errorf("Read after Write = %d, %v, want %d", pid, err, os.Getpid())
			}
		})
	}
}

// TestWriteHeld checks that a pidfile naming a live process that runs the
// same program is refused, and taken over once that process has exited.
func TestWriteHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baton.pid")
	other, stop := sameProgram(t)
	content := strconv.Itoa(other.Process.Pid) + "\n"
	writeFile(t, path, content)

	err := pidfile.Write(path)
	var held *pidfile.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("Write over the pidfile of a running master = %v, want a *HeldError", err)
	}
	if held.Path != path || held.PID != other.Process.Pid {
		t.Errorf("HeldError = %+v, want Path %s, PID %d", *held, path, other.Process.Pid)
	}
	for _, want := range []string{path, fmt.Sprintf("pid %d", other.Process.Pid), fmt.Sprintf("kill -TERM %d", other.Process.Pid), "--pidfile"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != content {
		t.Errorf("refused Write changed the pidfile to %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("refused Write left %d files", len(entries))
	}

	stop() // the other master exits without removing its pidfile
	if err := pidfile.Write(path); err != nil {
		t.Fatalf("Write once the holder has exited: %v", err)
	}
	checkOurs(t, path)
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		path string
		want string
	}{
		{filepath.Join(dir, "missing", "baton.pid"), "pidfile " + filepath.Join(dir, "missing", "baton.pid") + ": cannot write in " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{dir, "pidfile " + dir + ": file exists"}, // a directory is in the way
	}
	for _, tt := range tests {
		err := pidfile.Write(tt.path)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Write(%s) = %v, want %q", tt.path, err, tt.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed Writes left %v", entries)
	}
}

// TestWriteAtomic reads the pidfile while it is rewritten: a reader sees
// the whole PID every time, never an empty or partial file.
func TestWriteAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baton.pid")
	if err := pidfile.Write(path); err != nil {
		t.Fatal(err)
	}
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
			if pid, err := pidfile.Read(path); err != nil || pid != os.Getpid() {
				bad = append(bad, fmt.Sprintf("%d, %v", pid, err))
			}
		}
	}()
	for range 100 {
		if err := pidfile.Write(path); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("a reader saw %d bad reads during Writes, first: %s", len(bad), bad[0])
	}
	checkOurs(t, path)
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

func TestRemove(t *testing.T) {
	tests := []struct {
		name     string
		content  string // "": no file
		removed  bool
		wantErr  bool
		contentF func(t *testing.T) string
	}{
		{name: "ours", contentF: func(*testing.T) string { return strconv.Itoa(os.Getpid()) + "\n" }, removed: true},
		{name: "taken over by a newer master", contentF: func(t *testing.T) string { return strconv.Itoa(otherProgram(t)) + "\n" }},
		{name: "names a dead process", contentF: func(t *testing.T) string { return strconv.Itoa(deadPID(t)) }},
		{name: "missing", removed: true},
		{name: "garbage", content: "junk\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "baton.pid")
			content := tt.content
			if tt.contentF != nil {
				content = tt.contentF(t)
			}
			if content != "" {
				writeFile(t, path, content)
			}
			err := pidfile.Remove(path)
			if (err != nil) != tt.wantErr {
				t.Errorf("Remove = %v, want an error: %v", err, tt.wantErr)
			}
			_, statErr := os.Stat(path)
			if gone := errors.Is(statErr, fs.ErrNotExist); gone != tt.removed {
				t.Errorf("after Remove, the pidfile is gone: %v, want %v", gone, tt.removed)
			}
			if !tt.removed {
				if b, _ := os.ReadFile(path); string(b) != content {
					t.Errorf("Remove changed the pidfile to %q", b)
				}
			}
		})
	}
}

// TestWriteRemove is a master's life: Write at start, Remove at exit.
func TestWriteRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baton.pid")
	if err := pidfile.Write(path); err != nil {
		t.Fatal(err)
	}
	if err := pidfile.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pidfile still there after Remove: %v", err)
	}
	if err := pidfile.Remove(path); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}
