// Package harness is what baton's integration tests share: building the
// real binaries once, starting a real master with its JSON log parsed into
// events, bounded HTTP load over loopback, and looking for zombies in /proc.
// Tests built on it read like the user's story: start baton, load it, HUP
// it, count failures.
package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/proc"
)

// Binaries are the programs built from this module for a test run.
type Binaries struct {
	Baton      string
	TestWorker string
	Dir        string
}

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
)

// Build compiles cmd/baton and cmd/testworker once per test process.
func Build(t testing.TB) Binaries {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "baton-bin-")
		if err != nil {
			buildErr = err
			return
		}
		root := ModuleRoot()
		args := []string{"build", "-o", dir + "/"}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/baton", "./cmd/testworker")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		built = Binaries{Baton: filepath.Join(dir, "baton"), TestWorker: filepath.Join(dir, "testworker"), Dir: dir}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// ModuleRoot is the directory holding go.mod.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Event is one line of baton's JSON log.
type Event map[string]any

// Msg is the event's message, such as "worker ready".
func (e Event) Msg() string { s, _ := e["message"].(string); return s }

// Kind is the lifecycle step a line reports ("reload_complete", …): its
// "event" field, which a rewording of the message leaves alone.
func (e Event) Kind() string { s, _ := e["event"].(string); return s }

// Int reads a numeric field, 0 when absent.
func (e Event) Int(key string) int { f, _ := e[key].(float64); return int(f) }

// Str reads a string field.
func (e Event) Str(key string) string { s, _ := e[key].(string); return s }

// Baton is a running master started by Start, its log followed.
type Baton struct {
	*master

	mu     sync.Mutex
	events []Event
	lines  bytes.Buffer // everything it printed, for failure reports
}

// Start runs baton with args (its flags, "--" and the worker command),
// adding --pidfile and --log-format json, and returns once the first
// generation is serving. The master is killed, if still running, when the
// test ends.
func Start(t testing.TB, args ...string) *Baton {
	t.Helper()
	b := StartNoWait(t, args...)
	b.WaitFor(t, 20*time.Second, func(e Event) bool {
		return e.Kind() == "reload_complete" && e.Int("gen") >= 1
	})
	return b
}

// StartNoWait is Start without waiting for the first generation.
func StartNoWait(t testing.TB, args ...string) *Baton {
	t.Helper()
	return StartWith(t, Setup{}, args...)
}

// Setup is how StartWith runs baton beyond its arguments.
type Setup struct {
	// Env is added to the test's environment.
	Env []string
	// Wrap is a command that runs baton, such as systemd-socket-activate
	// with its options; baton's path and arguments follow it.
	Wrap []string
	// Command, when set, starts a baton of its own instead of the one
	// Build made, with no --pidfile added: a container run ending in
	// baton's path inside the container, say. --log-format json and
	// --log-level debug follow it, then the arguments.
	Command []string
	// Baton, when set, is the baton binary to run instead of the one
	// Build made: a copy that other users may run.
	Baton string
}

// StartWith starts baton as Setup says, without waiting for the first
// generation.
func StartWith(t testing.TB, setup Setup, args ...string) *Baton {
	t.Helper()
	b := &Baton{master: newMaster(t, setup, args)}
	stderr, err := b.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.Cmd.Stdout = &lockedWriter{b: b}
	// Registered before start's: runs once the master is gone.
	t.Cleanup(func() {
		CheckNoRace(t, b.Output())
		if t.Failed() {
			t.Logf("baton output:\n%s", b.Output())
		}
	})
	b.start(t, func() { b.readLog(stderr) })
	return b
}

type lockedWriter struct{ b *Baton }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	return w.b.lines.Write(p)
}

func (b *Baton) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		b.mu.Lock()
		// With --worker-output inherit, workers share baton's stderr: a
		// worker's partial line may precede baton's JSON on the same line.
		var e Event
		if i := bytes.Index(line, []byte(`{"level":`)); i >= 0 && json.Unmarshal(line[i:], &e) == nil && e["component"] == "baton" {
			b.events = append(b.events, e)
		}
		if e.Kind() == "worker_output" {
			// A worker's line as the worker wrote it, so that Output
			// reads the same whether workers' output is logged or not.
			b.lines.WriteString(e.Msg())
		} else {
			b.lines.Write(line)
		}
		b.lines.WriteByte('\n')
		b.mu.Unlock()
	}
}

// Output is everything baton and its workers printed so far, each line of
// worker output (a worker_output event) as the worker wrote it.
func (b *Baton) Output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lines.String()
}

// Events returns the log events so far.
func (b *Baton) Events() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Event(nil), b.events...)
}

// Find returns the events matching match.
func (b *Baton) Find(match func(Event) bool) []Event {
	var out []Event
	for _, e := range b.Events() {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// WaitFor polls the log until an event matches, failing the test after d
// or if baton exits first.
func (b *Baton) WaitFor(t testing.TB, d time.Duration, match func(Event) bool) Event {
	t.Helper()
	return b.await(t, d, "matching baton event", func() (Event, bool) {
		if found := b.Find(match); len(found) > 0 {
			return found[0], true
		}
		return nil, false
	})
}

// await polls the log until found picks an event from it, failing the
// test (saying what it waited for) after d or if baton exits first.
func (b *Baton) await(t testing.TB, d time.Duration, what string, found func() (Event, bool)) Event {
	t.Helper()
	var e Event
	var ok, exited bool
	poll(d, logPoll, func() bool {
		// Exited first: the log is complete once baton has exited, so a
		// last event is not missed.
		exited = b.Exited()
		e, ok = found()
		return ok || exited
	})
	switch {
	case ok:
		return e
	case exited:
		t.Fatalf("baton exited (%v) before the %s", b.err, what)
	default:
		t.Fatalf("no %s within %s", what, d)
	}
	return nil
}

// Terminate is a test's last resort for a process it started: unless
// exited (closed once p has been waited for) shows p is gone, it sends sig,
// and SIGKILL if p has not exited within grace.
func Terminate(p *os.Process, exited <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	select {
	case <-exited:
		return
	default:
	}
	p.Signal(sig)
	select {
	case <-exited:
	case <-time.After(grace):
		p.Kill()
		<-exited
	}
}

// CheckNoRace fails t if output holds a race detector report: the
// programs under test are built with -race, and their reports go to the
// output the test captured, not to the test's own result.
func CheckNoRace(t testing.TB, output string) {
	t.Helper()
	if strings.Contains(output, "WARNING: DATA RACE") {
		t.Errorf("the race detector found a data race in baton or its worker")
	}
}

// Addr is the address the socket called name was bound to.
func (b *Baton) Addr(t testing.TB, name string) string {
	t.Helper()
	e := b.WaitFor(t, 5*time.Second, func(e Event) bool { return e.Kind() == "listening" && e.Str("name") == name })
	return e.Str("addr")
}

// Generation is the newest generation whose reload completed.
func (b *Baton) Generation() int {
	gen := 0
	for _, e := range b.Find(func(e Event) bool { return e.Kind() == "reload_complete" }) {
		gen = max(gen, e.Int("gen")) // an older reload may end after a newer one
	}
	return gen
}

// Signal sends sig to the master.
func (b *Baton) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := b.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal master: %v", err)
	}
}

// Reload sends SIGHUP and waits for the reload it starts to end. It returns
// the "reload complete", "reload failed" or "rolled back" event.
func (b *Baton) Reload(t testing.TB, d time.Duration) Event {
	t.Helper()
	before := len(b.Find(isReloadEnd))
	b.Signal(t, syscall.SIGHUP)
	return b.await(t, d, "end of the reload", func() (Event, bool) {
		if ends := b.Find(isReloadEnd); len(ends) > before {
			return ends[before], true
		}
		return nil, false
	})
}

// isReloadEnd matches the end of a reload, not of a single worker's
// replacement (a crash restart, a scale-up).
func isReloadEnd(e Event) bool {
	switch e.Str("trigger") {
	case "crash", "scale", "watchdog", "probe", "memory", "age":
		return false
	}
	return e.Kind() == "reload_complete" || e.Kind() == "reload_failed" || e.Kind() == "rolled_back"
}

// Wait waits for the master to exit and returns its exit code.
func (b *Baton) Wait(t testing.TB, d time.Duration) int {
	t.Helper()
	err := b.waitExit(t, d)
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("baton: %v", err)
	return -1
}

// Proc is one process as /proc shows it.
type Proc struct {
	PID, PPID, PGID int
	State           string
	Comm            string
}

// Procs lists every process on the machine.
func Procs() []Proc {
	var out []Proc
	for _, s := range proc.Stats() {
		out = append(out, fromStat(s))
	}
	return out
}

// ReadProc reads /proc/PID/stat.
func ReadProc(pid int) (Proc, bool) {
	s, err := proc.ReadStat(pid)
	if err != nil {
		return Proc{}, false
	}
	return fromStat(s), true
}

func fromStat(s proc.Stat) Proc {
	return Proc{PID: s.PID, PPID: s.PPID, PGID: s.PGID, State: string(s.State), Comm: s.Comm}
}

// ProcsWhere lists the processes that match.
func ProcsWhere(match func(Proc) bool) []Proc {
	var out []Proc
	for _, p := range Procs() {
		if match(p) {
			out = append(out, p)
		}
	}
	return out
}

// WaitProc polls /proc until a process matches, failing the test after d.
func WaitProc(t testing.TB, d time.Duration, what string, match func(Proc) bool) Proc {
	t.Helper()
	var found Proc
	Eventually(t, d, what, func() bool {
		ps := ProcsWhere(match)
		if len(ps) > 0 {
			found = ps[0]
		}
		return len(ps) > 0
	})
	return found
}

// Zombies lists the defunct children of parent.
func Zombies(parent int) []Proc {
	return ProcsWhere(func(p Proc) bool { return p.PPID == parent && p.State == "Z" })
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	p, ok := ReadProc(pid)
	return ok && p.State != "Z"
}

// WaitGone waits up to d until none of pids is alive, and fails the test
// naming what (such as "the workers and the keeper") otherwise.
func WaitGone(t testing.TB, d time.Duration, what string, pids ...int) {
	t.Helper()
	Eventually(t, d, what+" gone", func() bool {
		return !slices.ContainsFunc(pids, Alive)
	})
}

// Run runs baton to completion with args, for commands and start-up
// failures, and returns its exit code with what it printed on stdout and
// stderr.
func Run(t testing.TB, d time.Duration, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return RunProgram(t, d, Build(t).Baton, args...)
}

// RunProgram runs the program at path to completion with args, killing
// it and failing the test if it still runs after d, and returns its exit
// code with what it printed on stdout and stderr.
func RunProgram(t testing.TB, d time.Duration, path string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), ProcessEnv...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %s: still running after %s\nstderr:\n%s", filepath.Base(path), strings.Join(args, " "), d, errb.String())
	}
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// Deploy writes an executable script at path that execs command, the way
// a deploy puts a new version in place: written aside, then renamed over
// the old one. baton resolves the worker command anew at each reload, so
// the next HUP runs what was deployed last.
func Deploy(t testing.TB, path string, command ...string) {
	t.Helper()
	quoted := make([]string, len(command))
	for i, a := range command {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	script := "#!/bin/sh\nexec " + strings.Join(quoted, " ") + "\n"
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Release deploys command as release n of an app under dir, the way a
// deploy tool does: dir/releases/N/app, then the symlink dir/current
// swapped to it. Run dir/current/app as the worker.
func Release(t testing.TB, dir string, n int, command ...string) {
	t.Helper()
	rel := filepath.Join(dir, "releases", strconv.Itoa(n))
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	Deploy(t, filepath.Join(rel, "app"), command...)
	tmp := filepath.Join(dir, "current.new")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("releases", strconv.Itoa(n)), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
}

// WorkerPID is the PID of the first worker generation gen started.
func (b *Baton) WorkerPID(t testing.TB, gen int) int {
	t.Helper()
	e := b.WaitFor(t, 10*time.Second, func(e Event) bool {
		return e.Kind() == "worker_started" && e.Int("gen") == gen
	})
	return e.Int("pid")
}

// OutputContains polls baton's output (its workers' too) for s.
func (b *Baton) OutputContains(t testing.TB, d time.Duration, s string) {
	t.Helper()
	Eventually(t, d, fmt.Sprintf("output %q", s), func() bool { return strings.Contains(b.Output(), s) })
}

var programs struct {
	sync.Mutex
	built map[string]string
}

// BuildProgram compiles the main package pkg (relative to the module
// root, such as "./cmd/tableflipworker") once per test process and
// returns the binary's path.
func BuildProgram(t testing.TB, pkg string) string {
	t.Helper()
	var flags []string
	if raceEnabled {
		flags = []string{"-race"}
	}
	return buildCached(t, pkg, pkg, "", nil, flags)
}

// BuildBaton compiles baton once per test process with its version set
// to version (what `baton version` and status report), for tests of an
// in-place upgrade between two builds; it returns the binary's path.
func BuildBaton(t testing.TB, version string) string {
	t.Helper()
	flags := []string{"-ldflags", "-X main.version=" + version}
	if raceEnabled {
		flags = append(flags, "-race")
	}
	return buildCached(t, "baton "+version, "./cmd/baton", "version-"+version, nil, flags)
}

// Install puts a copy of the file at src at path the way a package
// manager does: written beside it, then renamed over it, so that a
// running binary is never changed in place.
func Install(t testing.TB, src, path string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	InstallBytes(t, b, path)
}

// InstallBytes is Install with the file's content.
func InstallBytes(t testing.TB, b []byte, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// BuildStatic compiles the main package pkg (relative to the module root)
// once per test process as a static binary, without cgo and without the
// race detector, for another root filesystem than this machine's (a
// container with another libc); it returns the binary's path.
func BuildStatic(t testing.TB, pkg string) string {
	t.Helper()
	return buildCached(t, "static "+pkg, pkg, "static", []string{"CGO_ENABLED=0"}, nil)
}

// BuildStaticBaton is BuildStatic of cmd/baton with its version set to
// version, for an in-place upgrade inside another root filesystem.
func BuildStaticBaton(t testing.TB, version string) string {
	t.Helper()
	return buildCached(t, "static baton "+version, "./cmd/baton", "static-version-"+version,
		[]string{"CGO_ENABLED=0"}, []string{"-ldflags", "-X main.version=" + version})
}

// buildCached builds pkg with go build flags and env added to the test's
// environment, once per test process for each key, into subdir of Build's
// directory; it returns the binary's path.
func buildCached(t testing.TB, key, pkg, subdir string, env, flags []string) string {
	t.Helper()
	bins := Build(t)
	programs.Lock()
	defer programs.Unlock()
	if path, ok := programs.built[key]; ok {
		return path
	}
	dir := filepath.Join(bins.Dir, subdir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", key, err, b)
	}
	if programs.built == nil {
		programs.built = map[string]string{}
	}
	programs.built[key] = out
	return out
}

// InFlight requests url's /slow?d=D, which the test worker answers after
// d, and returns once the worker has said that this request started: a
// request in flight for whatever the test does next. The channel receives
// how it ended.
func (b *Baton) InFlight(t testing.TB, url string, d time.Duration) <-chan Answer {
	t.Helper()
	const started = "slow request started"
	before := strings.Count(b.Output(), started)
	answer := GetInBackground(url + "/slow?d=" + d.String())
	Eventually(t, 10*time.Second, "a slow request in flight", func() bool {
		return strings.Count(b.Output(), started) > before
	})
	return answer
}

// Answer is how one HTTP request ended.
type Answer struct {
	Body string
	Err  error
}

// GetInBackground requests url in a goroutine, for a request that must be
// in flight while the test does something else; the channel receives how it
// ended.
func GetInBackground(url string) <-chan Answer {
	done := make(chan Answer, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			done <- Answer{Err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		done <- Answer{string(body), err}
	}()
	return done
}
