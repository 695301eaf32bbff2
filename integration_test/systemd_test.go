package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/internal/nspawn"
	"github.com/baton-sh/baton/upgrader"
)

// systemdRootfs is the machine the shipped units run on: Debian trixie,
// whose systemd (257) has Type=notify-reload.
var systemdRootfs = nspawn.Rootfs{Suite: "trixie", Packages: []string{"systemd", "dbus", "curl", "procps"}}

// systemdCache is where the root filesystem is kept between runs.
func systemdCache() string {
	if d := os.Getenv(envnames.TestCache); d != "" {
		return d
	}
	return "/var/cache/baton-test"
}

// machine is a booted container with systemd as PID 1, the shipped units
// in /etc/systemd/system, baton in /usr/local/bin and releases of the test
// worker under /srv/app.
type machine struct {
	t *testing.T
	c *nspawn.Container
}

// bootMachine boots a throwaway copy (an overlay) of the cached root
// filesystem, debootstrapping it first if the cache has none, with the
// units from scripts/systemd installed unchanged and the "app" user they
// name.
func bootMachine(t *testing.T) *machine {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to boot a container with systemd-nspawn (scripts/test runs the tests as root)")
	}
	baton := harness.BuildStatic(t, "./cmd/baton")
	worker := harness.BuildStatic(t, "./cmd/testworker")

	start := time.Now()
	var progress bytes.Buffer
	rootfs, built, err := systemdRootfs.Cached(systemdCache(), &progress)
	if err != nil {
		t.Fatal(err)
	}
	if built {
		t.Logf("debootstrapped %s (%s) in %s", rootfs, strings.Join(systemdRootfs.Packages, ","), time.Since(start).Round(100*time.Millisecond))
	} else {
		t.Logf("root filesystem from the cache: %s", rootfs)
	}

	units, err := filepath.Glob(filepath.Join(harness.ModuleRoot(), "scripts", "systemd", "*"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in scripts/systemd: %v", err)
	}
	var console bytes.Buffer
	var consoleMu sync.Mutex
	c, err := nspawn.Boot(nspawn.Options{
		Rootfs:  rootfs,
		Name:    fmt.Sprintf("baton-test-%d", os.Getpid()),
		Console: lockedWriter{&consoleMu, &console},
		Prepare: func(root string) error {
			for _, u := range units {
				if err := copyFile(u, filepath.Join(root, "etc", "systemd", "system", filepath.Base(u)), 0o644); err != nil {
					return err
				}
			}
			if err := copyFile(baton, filepath.Join(root, "usr", "local", "bin", "baton"), 0o755); err != nil {
				return err
			}
			if err := copyFile(worker, filepath.Join(root, "usr", "local", "bin", "testworker"), 0o755); err != nil {
				return err
			}
			return os.MkdirAll(filepath.Join(root, "srv", "app", "releases"), 0o755)
		},
	})
	if err != nil {
		consoleMu.Lock()
		t.Logf("the container's console:\n%s", lastLines(console.String(), 40))
		consoleMu.Unlock()
		t.Fatal(err)
	}
	m := &machine{t: t, c: c}
	t.Cleanup(func() {
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		t.Logf("container powered off and removed in %s", time.Since(start).Round(10*time.Millisecond))
	})
	t.Cleanup(func() { // before Close
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, _ := c.Command(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", "app", "-u", "app-classic").CombinedOutput()
			t.Logf("journal of app and app-classic:\n%s", lastLines(string(out), 80))
			t.Logf("container console:\n%s", lastLines(c.Console(), 40))
		}
	})
	t.Logf("systemd %s booted in %s", firstField(m.must("systemctl", "--version")), c.Booted.Round(time.Millisecond))
	m.must("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/srv/app", "--shell", "/usr/sbin/nologin", "app")
	return m
}

// on is m for the (sub)test t: its failures end t.
func (m *machine) on(t *testing.T) *machine { return &machine{t: t, c: m.c} }

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// run runs args in the container and returns its output (stdout and
// stderr) and exit code; a command still running after a minute is killed.
func (m *machine) run(args ...string) (string, int) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := m.c.Command(ctx, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit) && ctx.Err() == nil:
		return string(out), exit.ExitCode()
	default:
		m.t.Fatalf("%s in the container: %v", strings.Join(args, " "), err)
		return "", -1
	}
}

// must runs args in the container and fails the test unless it exits 0.
func (m *machine) must(args ...string) string {
	m.t.Helper()
	out, code := m.run(args...)
	if code != 0 {
		m.t.Fatalf("`%s` exited %d: %s", strings.Join(args, " "), code, lastLines(out, 1))
	}
	return out
}

// timed runs `systemctl args…` and returns its output, exit code and how
// long it took.
func (m *machine) timed(args ...string) (string, int, time.Duration) {
	m.t.Helper()
	start := time.Now()
	out, code := m.run(append([]string{"systemctl"}, args...)...)
	return out, code, time.Since(start)
}

// show is one property of a unit, as `systemctl show` gives it.
func (m *machine) show(unit, prop string) string {
	m.t.Helper()
	return strings.TrimSpace(m.must("systemctl", "show", "--property", prop, "--value", unit))
}

// mainPID is the unit's MainPID, as the container numbers it.
func (m *machine) mainPID(unit string) int {
	m.t.Helper()
	pid, _ := strconv.Atoi(m.show(unit, "MainPID"))
	return pid
}

// journal is what the units logged (`journalctl -u … -o cat`): systemd's
// lines about them, and baton's and its workers' output.
func (m *machine) journal(units ...string) string {
	m.t.Helper()
	args := []string{"journalctl", "--no-pager", "-o", "cat"}
	for _, u := range units {
		args = append(args, "-u", u)
	}
	out, _ := m.run(args...)
	return out
}

// events are the JSON log events of the baton whose PID is pid, in unit.
// journald labels a service's output stream with the PID of the process
// it was opened for, and the workers share baton's stderr.
func (m *machine) events(unit string, pid int) []harness.Event {
	m.t.Helper()
	out, _ := m.run("journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_UNIT="+unit+".service", fmt.Sprintf("_PID=%d", pid))
	var events []harness.Event
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, `{"level":`); i >= 0 {
			var e harness.Event
			if json.Unmarshal([]byte(line[i:]), &e) == nil && e["component"] == "baton" {
				events = append(events, e)
			}
		}
	}
	return events
}

// waitEvent polls the journal for an event of baton pid in unit that
// matches, failing the test after 10s: journald stores lines a moment
// after they are written.
func (m *machine) waitEvent(unit string, pid int, what string, match func(harness.Event) bool) harness.Event {
	m.t.Helper()
	var found harness.Event
	harness.Eventually(m.t, 10*time.Second, what+" in the journal", func() bool {
		for _, e := range m.events(unit, pid) {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// unitProcs are the PIDs in the unit's cgroup: baton and its workers.
// baton's keeper, which is there for as long as baton runs, is left out.
func (m *machine) unitProcs(unit string) []int {
	m.t.Helper()
	out, _ := m.run("cat", "/sys/fs/cgroup/system.slice/"+unit+".service/cgroup.procs")
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		if comm, _ := m.run("cat", "/proc/"+f+"/comm"); strings.TrimSpace(comm) == "baton-keeper" {
			continue
		}
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// cwd is the working directory of pid in the container.
func (m *machine) cwd(pid int) string {
	m.t.Helper()
	return strings.TrimSpace(m.must("readlink", fmt.Sprintf("/proc/%d/cwd", pid)))
}

// deploy puts release n in place the way Capistrano does: a new directory
// releases/n whose server runs the test worker with flags, the symlink
// current -> releases/n swapped atomically, every older release deleted.
func (m *machine) deploy(n int, flags ...string) {
	m.t.Helper()
	app := filepath.Join(m.c.Root, "srv", "app")
	rel := filepath.Join(app, "releases", strconv.Itoa(n))
	if err := os.Mkdir(rel, 0o755); err != nil {
		m.t.Fatal(err)
	}
	script := "#!/bin/sh\nexec /usr/local/bin/testworker"
	for _, f := range flags {
		script += " '" + f + "'"
	}
	if err := os.WriteFile(filepath.Join(rel, "server"), []byte(script+"\n"), 0o755); err != nil {
		m.t.Fatal(err)
	}
	tmp := filepath.Join(app, "current.new")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("releases", strconv.Itoa(n)), tmp); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(app, "current")); err != nil {
		m.t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(app, "releases", "*"))
	for _, o := range old {
		if o != rel {
			if err := os.RemoveAll(o); err != nil {
				m.t.Fatal(err)
			}
		}
	}
}

// client talks to the container's 127.0.0.1 from this process.
func (m *machine) client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: m.c.DialContext, DisableKeepAlives: true},
		Timeout:   20 * time.Second,
	}
}

const appURL = "http://127.0.0.1:8080/"

// get requests path from the app in the container.
func (m *machine) get(path string) (string, error) {
	resp, err := m.client().Get(appURL + strings.TrimPrefix(path, "/"))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(body), err
}

// mustGet requests path and fails the test unless it is answered.
func (m *machine) mustGet(path string) string {
	m.t.Helper()
	body, err := m.get(path)
	if err != nil {
		m.t.Fatalf("GET %s in the container: %v", path, err)
	}
	return body
}

// appLoad is load on the app in the container: 4 loops that POST on a new
// connection each (a client never retries a POST, so every request the
// server side cut or refused is a failure), and 4 keep-alive loops with
// GET, 1000 requests/s each way.
type appLoad struct {
	post, keep *loadgen.Load
}

func (m *machine) startLoad() *appLoad {
	m.t.Helper()
	cfg := loadgen.Config{URL: appURL, DialContext: m.c.DialContext, Rate: 1000, MaxDuration: 2 * time.Minute}
	post, keep := cfg, cfg
	post.PostBody, post.NewConns = []byte("systemd"), 4
	keep.KeepAlive = 4
	l := &appLoad{}
	var err error
	if l.post, err = loadgen.Start(post); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { l.post.Stop() })
	if l.keep, err = loadgen.Start(keep); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { l.keep.Stop() })
	harness.Eventually(m.t, 10*time.Second, "load under way", func() bool { return l.Done() >= 200 })
	return l
}

func (l *appLoad) Done() int { return l.post.Done() + l.keep.Done() }

// flowing waits until 100 more requests than before have completed.
func (l *appLoad) flowing(t *testing.T, before int) {
	t.Helper()
	harness.Eventually(t, 20*time.Second, "requests flowing", func() bool { return l.Done() >= before+100 })
}

// stop ends the load and fails the test unless every request succeeded.
// It returns the summaries and how many worker PIDs answered.
func (l *appLoad) stop(t *testing.T) (post, keep loadgen.Summary, pids int) {
	t.Helper()
	post, keep = l.post.Stop().Summarize(), l.keep.Stop().Summarize()
	t.Logf("load: POST on new connections: %s", post)
	t.Logf("load: GET on keep-alive connections: %s", keep)
	if post.Failed != 0 || keep.Failed != 0 || post.Requests == 0 || keep.Requests == 0 {
		t.Fatalf("want 0 failed requests, got %d of %d POST and %d of %d GET failed", post.Failed, post.Requests, keep.Failed, keep.Requests)
	}
	seen := map[int]bool{}
	for pid := range post.PIDs {
		seen[pid] = true
	}
	for pid := range keep.PIDs {
		seen[pid] = true
	}
	return post, keep, len(seen)
}

// systemdNumbers collects what the test measured, logged at its end.
type systemdNumbers struct {
	lines []string
}

func (n *systemdNumbers) add(format string, args ...any) {
	n.lines = append(n.lines, fmt.Sprintf(format, args...))
}

// The shipped units under a real systemd (257, Debian trixie) as PID 1 in
// a container: socket activation, reloads under load, a reload that waits
// for a slow release, a broken release, a Capistrano deploy, restart and
// stop, four workers, and the `reload --wait` variant.
func TestSystemdUnits(t *testing.T) {
	t0 := time.Now()
	m := bootMachine(t)
	var numbers systemdNumbers
	numbers.add("boot: %s", m.c.Booted.Round(time.Millisecond))
	defer func() {
		t.Logf("whole test: %s", time.Since(t0).Round(100*time.Millisecond))
		for _, l := range numbers.lines {
			t.Log(l)
		}
	}()
	m.deploy(1)
	m.must("systemctl", "daemon-reload")
	m.must("systemctl", "start", "app.socket")
	release := 1
	var baton, worker int // app's MainPID and its serving worker

	// servingWorker waits for "reload complete" of generation gen of the
	// baton now running and returns the worker it started for it.
	servingWorker := func(m *machine, unit string, gen int) int {
		m.t.Helper()
		m.waitEvent(unit, baton, fmt.Sprintf("generation %d complete", gen), func(e harness.Event) bool {
			return e.Kind() == "reload_complete" && e.Int("gen") == gen
		})
		started := m.waitEvent(unit, baton, fmt.Sprintf("worker of generation %d", gen), func(e harness.Event) bool {
			return e.Kind() == "worker_started" && e.Int("gen") == gen
		})
		return started.Int("pid")
	}
	// reload runs `systemctl reload unit`, requires exit 0, the same
	// MainPID, and a new worker for the next generation, the old one gone
	// and baton's STATUS= in `systemctl status`; it returns how long
	// systemctl took.
	reload := func(m *machine, unit string, gen int) time.Duration {
		t := m.t
		t.Helper()
		isFailed := func(e harness.Event) bool { return e.Kind() == "reload_failed" }
		failedBefore := len(filterEvents(m.events(unit, baton), isFailed))
		out, code, took := m.timed("reload", unit)
		if code != 0 {
			t.Fatalf("systemctl reload %s (generation %d) exited %d: %s", unit, gen, code, firstLine(out))
		}
		// systemd's verdict is not baton's: wait for baton's own.
		harness.Eventually(t, 10*time.Second, fmt.Sprintf("generation %d complete or failed in the journal", gen), func() bool {
			events := m.events(unit, baton)
			if failed := filterEvents(events, isFailed); len(failed) > failedBefore {
				t.Fatalf("systemctl reload %s exited 0, but baton's reload to generation %d failed: %s", unit, gen, failed[len(failed)-1].Str("error"))
			}
			return len(filterEvents(events, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == gen })) > 0
		})
		if pid := m.mainPID(unit); pid != baton {
			t.Fatalf("MainPID of %s changed across a reload: %d, was %d", unit, pid, baton)
		}
		next := servingWorker(m, unit, gen)
		if next == worker {
			t.Fatalf("reload to generation %d kept worker %d", gen, worker)
		}
		worker = next
		if procs := m.unitProcs(unit); !slices.Equal(procs, sortedPair(baton, worker)) {
			t.Fatalf("after the reload to generation %d the unit's processes are %v, want baton %d and worker %d only", gen, procs, baton, worker)
		}
		status := m.must("systemctl", "status", "--no-pager", unit)
		want := fmt.Sprintf(`Status: "serving: generation %d, pid %d"`, gen, worker)
		if !strings.Contains(status, want) {
			t.Fatalf("systemctl status %s does not show baton's %s:\n%s", unit, want, status)
		}
		return took
	}
	gen := 1

	ok := t.Run("socket activation", func(t *testing.T) {
		m := m.on(t)
		if state := m.show("app", "ActiveState"); state != "inactive" {
			t.Fatalf("app.service is %s before the first connection, want inactive", state)
		}
		// Boot may report done a moment before sockets.target has app.socket
		// listening.
		harness.Eventually(t, 10*time.Second, "app.socket listening", func() bool {
			return m.show("app.socket", "ActiveState") == "active"
		})
		start := time.Now()
		body := m.mustGet("/")
		numbers.add("first request through app.socket (starts app.service): %s", time.Since(start).Round(time.Millisecond))
		if !strings.Contains(body, "gen=1 ") {
			t.Fatalf("first request answered %q, want generation 1", body)
		}
		if state := m.show("app", "ActiveState"); state != "active" {
			t.Fatalf("app.service is %s after the first connection, want active", state)
		}
		baton = m.mainPID("app")
		listening := m.waitEvent("app", baton, "listening", func(e harness.Event) bool { return e.Kind() == "listening" })
		if listening["activated"] != true || listening.Str("name") != "http" {
			t.Fatalf("baton did not adopt systemd's socket: %v", listening)
		}
		worker = servingWorker(m, "app", 1)
		if dir := m.cwd(worker); dir != "/srv/app/releases/1" {
			t.Fatalf("worker runs in %s, want /srv/app/releases/1", dir)
		}
		if strings.Contains(m.journal("app"), "resolved once at start") {
			t.Fatal("baton says its working directory was resolved once: the unit should pass --dir")
		}
	})
	if !ok {
		return
	}

	ok = t.Run("5 reloads under load", func(t *testing.T) {
		m := m.on(t)
		load := m.startLoad()
		var took []string
		for i := 0; i < 5; i++ {
			before := load.Done()
			gen++
			took = append(took, reload(m, "app", gen).Round(time.Millisecond).String())
			load.flowing(t, before)
		}
		post, keep, pids := load.stop(t)
		if pids < 6 {
			t.Fatalf("answers came from %d worker PIDs, want 6 (one per generation)", pids)
		}
		numbers.add("5 × systemctl reload app under load: %d POST + %d GET, 0 failed, %d worker PIDs; systemctl reload took %s",
			post.Requests, keep.Requests, pids, strings.Join(took, ", "))
	})
	if !ok {
		return
	}

	ok = t.Run("baton upgrade under load", func(t *testing.T) {
		m := m.on(t)
		start := time.Now()
		build := harness.BuildStaticBaton(t, "upgrade-new")
		built := time.Since(start)
		restarts := m.show("app", "NRestarts")
		before := m.waitStatus("baton's status", func(upgrader.Status) bool { return true })
		// systemd logs the notifications it gets, and its unit's state
		// changes, at debug level.
		m.must("systemctl", "log-level", "debug")
		defer m.must("systemctl", "log-level", "info")
		load := m.startLoad()
		flowing := load.Done()
		// A package upgrade puts the new binary in place (written aside,
		// renamed over the old one), then its hook runs `baton upgrade`.
		harness.Install(t, build, filepath.Join(m.c.Root, "usr", "local", "bin", "baton"))
		out, code := m.run("/usr/local/bin/baton", "upgrade", "--wait", "--pidfile", "/run/app/baton.pid")
		if code != 0 || !strings.Contains(out, "upgrade-new") {
			t.Fatalf("baton upgrade --wait in app.service exited %d: %s", code, out)
		}
		after := m.waitStatus("baton's status", func(upgrader.Status) bool { return true })
		if pid := m.mainPID("app"); pid != baton || after.PID != baton || !strings.Contains(after.Version, "upgrade-new") ||
			fmt.Sprint(workerPIDs(after)) != fmt.Sprint(workerPIDs(before)) {
			t.Fatalf("after the upgrade MainPID is %d (was %d), status %+v (was %+v)", pid, baton, after, before)
		}
		for prop, want := range map[string]string{"NRestarts": restarts, "ActiveState": "active", "SubState": "running", "ReloadResult": "success"} {
			if got := m.show("app", prop); got != want {
				t.Fatalf("app.service's %s is %s after the upgrade, want %s", prop, got, want)
			}
		}
		// What systemd saw: RELOADING=1 with MONOTONIC_USEC from baton's
		// PID, the unit reloading, then READY=1 and the unit running again.
		steps := []*regexp.Regexp{
			regexp.MustCompile(fmt.Sprintf(`Got notification message from PID %d: RELOADING=1, MONOTONIC_USEC=\d+, STATUS=upgrading baton in place`, baton)),
			regexp.MustCompile(`Changed running -> reload-notify`),
			regexp.MustCompile(fmt.Sprintf(`Got notification message from PID %d: READY=1, STATUS=serving: generation %d`, baton, gen)),
			regexp.MustCompile(`Changed reload-notify -> running`),
		}
		harness.Eventually(t, 10*time.Second, "systemd's view of the upgrade in the journal", func() bool {
			next := 0
			for _, l := range strings.Split(m.journal("app"), "\n") {
				if next < len(steps) && steps[next].MatchString(l) {
					next++
				}
			}
			return next == len(steps)
		})
		load.flowing(t, flowing)
		post, keep, _ := load.stop(t)
		numbers.add("baton upgrade --wait under load: %q; MainPID %d, NRestarts %s, active, systemd saw RELOADING=1 then READY=1; %d POST + %d GET, 0 failed; the step took %s, building the new baton %s of it",
			strings.TrimSpace(out), baton, restarts, post.Requests, keep.Requests, time.Since(start).Round(100*time.Millisecond), built.Round(100*time.Millisecond))
	})
	if !ok {
		return
	}

	ok = t.Run("Capistrano deploy", func(t *testing.T) {
		m := m.on(t)
		// current -> releases/N swapped, the previous release deleted,
		// twice: each reload starts the worker in the new release.
		load := m.startLoad()
		for i := 0; i < 2; i++ {
			release++
			m.deploy(release)
			before := load.Done()
			gen++
			reload(m, "app", gen)
			want := fmt.Sprintf("/srv/app/releases/%d", release)
			if dir := m.cwd(worker); dir != want {
				t.Fatalf("after deploying release %d the worker runs in %s, want %s", release, dir, want)
			}
			load.flowing(t, before)
		}
		load.stop(t)
	})
	if !ok {
		return
	}

	ok = t.Run("reload waits for a slow release", func(t *testing.T) {
		m := m.on(t)
		const slow = 1500 * time.Millisecond
		release++
		m.deploy(release, "-ready-after", slow.String())
		load := m.startLoad()
		before := load.Done()
		gen++
		// Watch ActiveState while systemctl reload runs.
		type seen struct {
			at    time.Duration
			state string
		}
		var states []seen
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		start := time.Now()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := m.c.Command(ctx, "systemctl", "show", "--property", "ActiveState", "--value", "app").Output()
				cancel()
				if err == nil {
					states = append(states, seen{time.Since(start), strings.TrimSpace(string(out))})
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		took := reload(m, "app", gen)
		close(done)
		wg.Wait()
		if took < slow {
			t.Fatalf("systemctl reload returned after %s, before the release could be ready (%s)", took, slow)
		}
		var lastReloading time.Duration
		for _, s := range states {
			if s.at > took {
				break
			}
			switch s.state {
			case "reloading":
				lastReloading = s.at
			case "active":
				if lastReloading > 0 {
					t.Fatalf("app.service was active again %s after the reload began, before the slow release was ready", s.at.Round(time.Millisecond))
				}
			default:
				t.Fatalf("app.service was %s during the reload", s.state)
			}
		}
		if lastReloading < slow-200*time.Millisecond {
			t.Fatalf("app.service was last seen reloading %s after the reload began, want until the release was ready (%s): %v", lastReloading, slow, states)
		}
		if state := m.show("app", "ActiveState"); state != "active" {
			t.Fatalf("app.service is %s after the reload, want active", state)
		}
		ready := m.waitEvent("app", baton, "worker ready", func(e harness.Event) bool {
			return e.Kind() == "worker_ready" && e.Int("gen") == gen
		})
		load.flowing(t, before)
		load.stop(t)
		numbers.add("reload of a release that needs %s to be ready: systemctl reload took %s (worker ready after %s), app.service reloading until then",
			slow, took.Round(time.Millisecond), ready.Str("took"))
	})
	if !ok {
		return
	}

	ok = t.Run("broken release", func(t *testing.T) {
		m := m.on(t)
		release++
		m.deploy(release, "-fail-at-start")
		load := m.startLoad()
		before := load.Done()
		out, code, _ := m.timed("reload", "app")
		// Type=notify-reload: baton says READY=1 (the old generation
		// serves), so systemd sees a reload that succeeded.
		if code != 0 {
			t.Fatalf("systemctl reload app with a broken release exited %d (%s); Type=notify-reload reports no failure", code, lastLines(out, 1))
		}
		failed := m.waitEvent("app", baton, "reload failed", func(e harness.Event) bool { return e.Kind() == "reload_failed" })
		status := m.must("systemctl", "status", "--no-pager", "app")
		want := fmt.Sprintf("generation %d is still serving", gen)
		if !strings.Contains(status, `Status: "reload failed: `) || !strings.Contains(status, want) {
			t.Fatalf("systemctl status app does not say why the reload failed (%q):\n%s", failed.Str("error"), status)
		}
		if body := m.mustGet("/"); !strings.Contains(body, fmt.Sprintf("pid=%d", worker)) {
			t.Fatalf("after the failed reload %q answered, want the old worker %d", body, worker)
		}
		if procs := m.unitProcs("app"); !slices.Equal(procs, sortedPair(baton, worker)) {
			t.Fatalf("after the failed reload the unit's processes are %v, want baton %d and worker %d", procs, baton, worker)
		}
		load.flowing(t, before)
		load.stop(t)
		gen++ // the failed generation's number is used up

		// The next good release reloads.
		release++
		m.deploy(release)
		gen++
		reload(m, "app", gen)
		numbers.add("broken release: systemctl reload app exits 0, status %q", lastLines(strings.TrimSpace(statusLine(status)), 1))
	})
	if !ok {
		return
	}

	ok = t.Run("restart with app.socket under load", func(t *testing.T) {
		m := m.on(t)
		load := m.startLoad()
		before := load.Done()
		out, code, took := m.timed("restart", "app")
		if code != 0 {
			t.Fatalf("systemctl restart app exited %d: %s", code, lastLines(out, 1))
		}
		old := baton
		baton = m.mainPID("app")
		if baton == old || baton == 0 {
			t.Fatalf("MainPID after restart: %d (was %d)", baton, old)
		}
		listening := m.waitEvent("app", baton, "listening", func(e harness.Event) bool { return e.Kind() == "listening" })
		if listening["activated"] != true {
			t.Fatalf("the restarted baton did not take systemd's socket: %v", listening)
		}
		gen = 1
		worker = servingWorker(m, "app", gen)
		load.flowing(t, before)
		post, keep, _ := load.stop(t)
		numbers.add("systemctl restart app under load: %s; %d POST + %d GET, 0 failed", took.Round(time.Millisecond), post.Requests, keep.Requests)
	})
	if !ok {
		return
	}

	ok = t.Run("stop with a request in flight", func(t *testing.T) {
		m := m.on(t)
		slow := make(chan error, 1)
		go func() {
			body, err := m.get("/slow?d=2s")
			if err == nil && !strings.Contains(body, "slow done") {
				err = fmt.Errorf("answer %q", body)
			}
			slow <- err
		}()
		marker := fmt.Sprintf("slow request started pid=%d", worker)
		harness.Eventually(t, 10*time.Second, "slow request in flight", func() bool { return strings.Contains(m.journal("app"), marker) })
		out, code, took := m.timed("stop", "app")
		if code != 0 {
			t.Fatalf("systemctl stop app exited %d: %s", code, lastLines(out, 1))
		}
		select {
		case err := <-slow:
			if err != nil {
				t.Fatalf("the request in flight at stop was cut: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the request in flight at stop got no answer")
		}
		if r := m.show("app", "Result"); r != "success" {
			t.Fatalf("app.service stopped with Result=%s, want success", r)
		}
		if s := m.show("app", "ExecMainStatus"); s != "0" {
			t.Fatalf("baton exited %s on stop, want 0", s)
		}
		for _, l := range strings.Split(m.journal("app"), "\n") {
			if strings.Contains(l, "SIGKILL") {
				t.Fatalf("something was SIGKILLed: %s", l)
			}
		}
		if procs := m.unitProcs("app"); len(procs) != 0 {
			t.Fatalf("processes left after stop: %v", procs)
		}
		if state := m.show("app.socket", "ActiveState"); state != "active" {
			t.Fatalf("app.socket is %s after stopping app.service, want active (listening)", state)
		}
		numbers.add("systemctl stop app with a 2s request in flight: %s, the request answered, Result=success, nothing SIGKILLed", took.Round(time.Millisecond))
	})
	if !ok {
		return
	}

	ok = t.Run("four workers", func(t *testing.T) {
		m := m.on(t)
		start := time.Now()
		// app.service as shipped, with --workers 4 added to its ExecStart=
		// by a drop-in, as `systemctl edit app` writes one.
		dropin := filepath.Join(m.c.Root, "etc", "systemd", "system", "app.service.d", "workers.conf")
		if err := os.MkdirAll(filepath.Dir(dropin), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dropin, []byte("[Service]\nExecStart=\n"+shippedExecStart(t, "--workers", "4")), 0o644); err != nil {
			t.Fatal(err)
		}
		m.must("systemctl", "daemon-reload")
		m.must("systemctl", "start", "app")
		baton = m.mainPID("app")
		st := m.fleet(1)
		load := m.startLoad()
		var took []string
		for g := 2; g <= 3; g++ {
			before := load.Done()
			old := bySlot(t, st)
			out, code, d := m.timed("reload", "app")
			if code != 0 {
				t.Fatalf("systemctl reload app with 4 workers exited %d: %s", code, firstLine(out))
			}
			took = append(took, d.Round(time.Millisecond).String())
			st = m.fleet(g)
			for slot, pid := range bySlot(t, st) {
				if hasPID(old, pid) {
					t.Fatalf("reload to generation %d: worker %d kept pid %d", g, slot, pid)
				}
			}
			if pid := m.mainPID("app"); pid != baton {
				t.Fatalf("MainPID changed across a reload: %d, was %d", pid, baton)
			}
			status := m.must("systemctl", "status", "--no-pager", "app")
			if want := fmt.Sprintf(`Status: "serving: generation %d, 4 workers"`, g); !strings.Contains(status, want) {
				t.Fatalf("systemctl status app does not show baton's %s:\n%s", want, status)
			}
			load.flowing(t, before)
		}
		// One worker more and one fewer, still under load, the way
		// docs/systemd.md says: to MainPID alone. systemctl kill's
		// default (every process of the unit) would stop each worker,
		// for which SIGTTIN's default action is to stop.
		serving := bySlot(t, st)
		m.must("systemctl", "kill", "--kill-whom=main", "--signal=TTIN", "app")
		m.waitStatus("a fifth worker serving", func(s upgrader.Status) bool {
			return len(s.Workers) == 5 && servingOf(s, 3) == 5
		})
		m.must("systemctl", "kill", "--kill-whom=main", "--signal=TTOU", "app")
		st = m.fleet(3)
		requireSame(t, "after TTIN and TTOU", serving, bySlot(t, st), 0, 1, 2, 3)
		for _, pid := range m.unitProcs("app") {
			if stat := strings.TrimSpace(m.must("ps", "-o", "stat=", "-p", strconv.Itoa(pid))); strings.HasPrefix(stat, "T") {
				t.Fatalf("after systemctl kill --kill-whom=main --signal=TTIN and TTOU, pid %d is stopped (%s)", pid, stat)
			}
		}
		post, keep, pids := load.stop(t)

		// A killed worker is baton's to restart: systemd sees nothing.
		before := bySlot(t, st)
		m.must("kill", "-KILL", strconv.Itoa(before[3]))
		st = m.waitStatus("worker 3 restarted", func(s upgrader.Status) bool {
			return len(s.Workers) == 4 && s.Restarts == 1 && fleetServing(s, 3)
		})
		requireSame(t, "after worker 3 was killed", before, bySlot(t, st), 0, 1, 2)
		if pid, n := m.mainPID("app"), m.show("app", "NRestarts"); pid != baton || n != "0" {
			t.Fatalf("after worker 3 was killed: MainPID %d (was %d), NRestarts %s; want the unit untouched", pid, baton, n)
		}
		m.must("systemctl", "stop", "app")
		if procs := m.unitProcs("app"); len(procs) != 0 {
			t.Fatalf("processes left after stopping app with 4 workers: %v", procs)
		}
		if err := os.Remove(dropin); err != nil {
			t.Fatal(err)
		}
		m.must("systemctl", "daemon-reload")
		numbers.add("--workers 4: 2 × systemctl reload app and a TTIN and a TTOU under load: %d POST + %d GET, 0 failed, %d worker PIDs; systemctl reload took %s; a SIGKILLed worker restarted by baton, NRestarts=0; the step took %s",
			post.Requests, keep.Requests, pids, strings.Join(took, ", "), time.Since(start).Round(100*time.Millisecond))
	})
	if !ok {
		return
	}

	ok = t.Run("WatchdogSec", func(t *testing.T) {
		m := m.on(t)
		// A drop-in gives app.service a watchdog: baton's loop keeps it
		// fed through a reload and an in-place upgrade (the new image
		// reads WATCHDOG_USEC anew), and systemd restarts a master whose
		// loop no longer runs (here, one that is SIGSTOPped).
		dropin := filepath.Join(m.c.Root, "etc", "systemd", "system", "app.service.d", "watchdog.conf")
		if err := os.MkdirAll(filepath.Dir(dropin), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dropin, []byte("[Service]\nWatchdogSec=1s\nTimeoutAbortSec=3s\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer func() {
			os.Remove(dropin)
			m.must("systemctl", "daemon-reload")
		}()
		m.must("systemctl", "daemon-reload")
		m.must("systemctl", "restart", "app") // the watchdog is armed at start
		baton = m.mainPID("app")
		fed := func() int64 {
			n, _ := strconv.ParseInt(m.show("app", "WatchdogTimestampMonotonic"), 10, 64)
			return n
		}
		last, seen := fed(), 0
		harness.Eventually(t, 10*time.Second, "8 keep-alives in a row, a reload and an upgrade among them", func() bool {
			if now := fed(); now > last {
				last, seen = now, seen+1
				switch seen {
				case 3:
					if out, code, _ := m.timed("reload", "app"); code != 0 {
						t.Fatalf("systemctl reload app with WatchdogSec=1s exited %d: %s", code, firstLine(out))
					}
				case 5:
					if out, code := m.run("/usr/local/bin/baton", "upgrade", "--wait", "--pidfile", "/run/app/baton.pid"); code != 0 {
						t.Fatalf("baton upgrade --wait with WatchdogSec=1s exited %d: %s", code, firstLine(out))
					}
				}
			}
			return seen >= 8
		})
		if pid, n := m.mainPID("app"), m.show("app", "NRestarts"); pid != baton || n != "0" {
			t.Fatalf("with WatchdogSec=1s: MainPID %d (was %d), NRestarts %s; want baton fed systemd's watchdog", pid, baton, n)
		}
		stopped := time.Now()
		m.must("kill", "-STOP", strconv.Itoa(baton))
		harness.Eventually(t, 15*time.Second, "systemd restarting a SIGSTOPped baton", func() bool {
			pid := m.mainPID("app")
			return pid != 0 && pid != baton && m.show("app", "ActiveState") == "active"
		})
		restarted := time.Since(stopped)
		if !strings.Contains(m.journal("app"), "Watchdog timeout") {
			t.Fatal("app.service was restarted, but not by its watchdog")
		}
		numbers.add("WatchdogSec=1s: 8 keep-alives, a reload and an in-place upgrade among them, NRestarts=0; baton SIGSTOPped → restarted by the watchdog, serving under a new MainPID, in %s", restarted.Round(time.Millisecond))
		m.must("systemctl", "stop", "app")
		if procs := m.unitProcs("app"); len(procs) != 0 {
			t.Fatalf("processes left after stopping app: %v", procs)
		}
		m.must("systemctl", "reset-failed", "app")
	})
	if !ok {
		return
	}

	ok = t.Run("reload --wait variant", func(t *testing.T) {
		m := m.on(t)
		m.must("systemctl", "stop", "app.socket")
		m.must("systemctl", "start", "app-classic")
		baton = m.mainPID("app-classic")
		gen = 1
		worker = servingWorker(m, "app-classic", gen)
		load := m.startLoad()
		before := load.Done()
		gen++
		reload(m, "app-classic", gen)

		release++
		m.deploy(release, "-fail-at-start")
		out, code, _ := m.timed("reload", "app-classic")
		if code == 0 {
			t.Fatalf("systemctl reload app-classic with a broken release exited 0, want a failure: %s", firstLine(out))
		}
		// The output of ExecReload= is in the unit's journal.
		var verdict string
		harness.Eventually(t, 10*time.Second, "baton reload --wait's verdict in the journal", func() bool {
			for _, l := range strings.Split(m.journal("app-classic"), "\n") {
				if strings.HasPrefix(l, "baton: reload failed: ") {
					verdict = l
				}
			}
			return verdict != ""
		})
		if body := m.mustGet("/"); !strings.Contains(body, fmt.Sprintf("pid=%d", worker)) {
			t.Fatalf("after the failed reload %q answered, want the old worker %d", body, worker)
		}
		status := m.must("systemctl", "status", "--no-pager", "app-classic")
		if !strings.Contains(status, `Status: "reload failed: `) {
			t.Fatalf("systemctl status app-classic does not say why the reload failed:\n%s", status)
		}
		if state := m.show("app-classic", "ActiveState"); state != "active" {
			t.Fatalf("app-classic is %s after the failed reload, want active", state)
		}
		gen++
		release++
		m.deploy(release)
		gen++
		reload(m, "app-classic", gen)
		load.flowing(t, before)
		load.stop(t)
		m.must("systemctl", "stop", "app-classic")
		numbers.add("app-classic (ExecReload=baton reload --wait): a broken release makes systemctl reload exit %d (%s); the journal has %q", code, firstLine(out), verdict)
	})
	if !ok {
		return
	}

	t.Run("notify-reload with ExecReload reloads twice", func(t *testing.T) {
		m := m.on(t)
		// What the units warn against, shown: Type=notify-reload sends
		// SIGHUP and runs ExecReload= too.
		dropin := filepath.Join(m.c.Root, "etc", "systemd", "system", "app.service.d")
		if err := os.MkdirAll(dropin, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := "[Service]\nExecReload=/usr/local/bin/baton reload --wait --pidfile /run/app/baton.pid\n"
		if err := os.WriteFile(filepath.Join(dropin, "reload-wait.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		m.must("systemctl", "daemon-reload")
		m.must("systemctl", "start", "app")
		baton = m.mainPID("app")
		servingWorker(m, "app", 1)
		m.must("systemctl", "reload", "app")
		m.waitEvent("app", baton, "generation 3", func(e harness.Event) bool {
			return e.Kind() == "reload_complete" && e.Int("gen") == 3
		})
		n := 0
		for _, e := range m.events("app", baton) {
			if e.Kind() == "reload_requested" && e.Str("trigger") != "start" {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("one systemctl reload of a Type=notify-reload unit with ExecReload=baton reload --wait made %d reloads, want the 2 the units warn about", n)
		}
		m.must("systemctl", "stop", "app")
	})

	t.Run("baton as root runs its workers as app", func(t *testing.T) {
		m := m.on(t)
		start := time.Now()
		// The unit of docs/privileges.md: baton binds port 80 as root and
		// runs every worker as app.
		unit := `[Service]
Type=notify
ExecStart=/usr/local/bin/baton --pidfile /run/app-root/baton.pid --listen http=tcp://0.0.0.0:80 \
    --user app --umask 027 --dir /srv/app/current --log-format json -- /srv/app/current/server
ExecReload=/usr/local/bin/baton reload --wait --timeout 90s --pidfile /run/app-root/baton.pid
RuntimeDirectory=app-root
KillMode=mixed
TimeoutStopSec=40s
`
		if err := os.WriteFile(filepath.Join(m.c.Root, "etc", "systemd", "system", "app-root.service"), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		m.must("systemctl", "daemon-reload")
		m.must("systemctl", "start", "app-root")
		app, _ := strconv.Atoi(strings.TrimSpace(m.must("id", "-u", "app")))
		uid := func(pid int) int {
			u, _ := strconv.Atoi(strings.TrimSpace(m.must("ps", "-o", "uid=", "-p", strconv.Itoa(pid))))
			return u
		}
		baton = m.mainPID("app-root")
		gen = 1
		worker = servingWorker(m, "app-root", gen)
		var workers []int
		for ; gen <= 2; gen++ {
			if gen == 2 {
				reload(m, "app-root", gen)
			}
			if u := uid(worker); u != app || worker == 0 {
				t.Fatalf("generation %d's worker %d runs as uid %d, want app (%d)", gen, worker, u, app)
			}
			if mask := m.must("grep", "^Umask:", fmt.Sprintf("/proc/%d/status", worker)); strings.Fields(mask)[1] != "0027" {
				t.Fatalf("generation %d's worker has %s, want 0027", gen, strings.TrimSpace(mask))
			}
			resp, err := m.client().Get("http://127.0.0.1:80/")
			if err != nil {
				t.Fatalf("GET on port 80: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), fmt.Sprintf("pid=%d", worker)) {
				t.Fatalf("port 80 answered %q, want worker %d", body, worker)
			}
			workers = append(workers, worker)
		}
		if u := uid(baton); u != 0 {
			t.Fatalf("baton runs as uid %d, want root", u)
		}
		m.must("systemctl", "stop", "app-root")
		if r := m.show("app-root", "Result"); r != "success" {
			t.Fatalf("app-root.service stopped with Result=%s, want success", r)
		}
		numbers.add("app-root.service (baton as root, --user app, port 80): workers %v ran as uid %d, a reload included; start, reload and stop took %s",
			workers, app, time.Since(start).Round(time.Millisecond))
	})
}

// fleet waits until baton in app.service serves with four workers of
// generation gen and nothing else, each in the unit's cgroup, and returns
// its status.
func (m *machine) fleet(gen int) upgrader.Status {
	m.t.Helper()
	st := m.waitStatus(fmt.Sprintf("4 workers of generation %d serving", gen), func(s upgrader.Status) bool {
		if len(s.Workers) != 4 || s.Generation != gen {
			return false
		}
		for _, w := range s.Workers {
			if w.State != "serving" || w.Probation || w.Generation != gen {
				return false
			}
		}
		return true
	})
	want := []int{m.mainPID("app")}
	for _, w := range st.Workers {
		want = append(want, w.PID)
	}
	slices.Sort(want)
	if procs := m.unitProcs("app"); !slices.Equal(procs, want) {
		m.t.Fatalf("app.service's processes are %v, want baton and its 4 workers %v", procs, want)
	}
	return st
}

// waitStatus polls `baton status --json` in the container until cond
// holds.
func (m *machine) waitStatus(what string, cond func(upgrader.Status) bool) upgrader.Status {
	m.t.Helper()
	var st upgrader.Status
	harness.Eventually(m.t, 30*time.Second, what, func() bool {
		out, code := m.run("/usr/local/bin/baton", "status", "--json", "--pidfile", "/run/app/baton.pid")
		st = upgrader.Status{}
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && cond(st)
	})
	return st
}

// fleetServing reports whether slot has a serving worker in s.
func fleetServing(s upgrader.Status, slot int) bool {
	for _, w := range s.Workers {
		if w.Index == slot && w.State == "serving" {
			return true
		}
	}
	return false
}

// shippedExecStart is the ExecStart= of scripts/systemd/app.service, with
// flags added after baton's path.
func shippedExecStart(t *testing.T, flags ...string) string {
	t.Helper()
	unit, err := os.ReadFile(filepath.Join(harness.ModuleRoot(), "scripts", "systemd", "app.service"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/baton(?:.*\\\n)*.*\n`).FindString(string(unit))
	if block == "" {
		t.Fatal("scripts/systemd/app.service has no ExecStart=/usr/local/bin/baton")
	}
	return strings.Replace(block, "/usr/local/bin/baton", "/usr/local/bin/baton "+strings.Join(flags, " "), 1)
}

func filterEvents(events []harness.Event, match func(harness.Event) bool) []harness.Event {
	var out []harness.Event
	for _, e := range events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func sortedPair(a, b int) []int {
	if a > b {
		a, b = b, a
	}
	return []int{a, b}
}

// statusLine is the "Status:" line of `systemctl status`.
func statusLine(status string) string {
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "Status:") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

// lastLines is the end of s, at most n non-empty lines.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func firstField(s string) string {
	f := strings.Fields(s)
	if len(f) < 2 {
		return s
	}
	return f[1]
}
