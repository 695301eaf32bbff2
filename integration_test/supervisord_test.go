package integration_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// supervisorCtl is a supervisord started by a test, with its program "app"
// taken from scripts/supervisord/baton.conf.
type supervisorCtl struct {
	t       *testing.T
	ctlBin  string // the supervisorctl binary
	conf    string
	appLog  string // the program's stdout_logfile: baton's JSON log and the worker's output
	pidfile string // baton's
	url     string
	marker  string // environment entry every process of the program carries
	cmd     *exec.Cmd
	output  ecoBuffer // supervisord's own log on stdout
	exited  chan struct{}
}

// Under supervisord, which watches one PID, a reload is `supervisorctl
// signal HUP app`: baton's PID stays the one supervisord started, the
// worker behind it is replaced with no failed request, and nothing is left
// defunct. A new baton installed over the program's binary takes over in
// place with `baton upgrade --wait`, supervisord none the wiser. stop
// drains; start and restart work; supervisord's own shutdown stops the
// program as stop does. Each step goes on from where the one before it
// left the program, so the first that fails ends the test.
func TestSupervisordSignalHUPStopStartRestart(t *testing.T) {
	// baton installed at a path of its own, as a package installs it, so
	// that a newer build can be put there.
	old, new := harness.BuildBaton(t, "upgrade-old"), harness.BuildBaton(t, "upgrade-new")
	installed := filepath.Join(t.TempDir(), "bin", "baton")
	harness.Install(t, old, installed)
	s := startSupervisord(t, installed)
	baton := s.requireBatonServing(t)
	var worker, started int
	for _, step := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"signal HUP under load", func(t *testing.T) { worker = s.reloadsUnderLoad(t, baton, 5) }},
		{"baton upgrade under load", func(t *testing.T) { s.upgradeUnderLoad(t, baton, installed, old, new) }},
		{"stop with a request in flight", func(t *testing.T) { s.stopWithRequestInFlight(t, baton, worker) }},
		{"start", func(t *testing.T) { started = s.start(t, baton) }},
		{"restart", func(t *testing.T) { s.restart(t, started) }},
		{"shutdown", s.shutdown},
	} {
		if !t.Run(step.name, step.run) {
			return
		}
	}
}

// The same program with --workers 4: `supervisorctl signal HUP app`
// replaces all four workers under load with no failed request while
// supervisord sees the same PID RUNNING; `supervisorctl signal TTIN` and
// `TTOU` add and remove a worker, still under load; a SIGKILLed worker is
// restarted by baton alone, supervisord none the wiser; stop leaves no
// worker.
func TestSupervisordFourWorkers(t *testing.T) {
	s := startSupervisord(t, harness.Build(t).Baton, "--workers", "4")
	baton := s.requireBatonServing(t)
	st := s.fleet(t, 1)

	load := startLoad(t, s.url+"/")
	var took []string
	for gen := 2; gen <= 4; gen++ {
		before := load.Done()
		old := bySlot(t, st)
		took = append(took, s.hup(t, gen))
		st = s.fleet(t, gen)
		for slot, pid := range bySlot(t, st) {
			if hasPID(old, pid) {
				t.Fatalf("reload to generation %d: worker %d kept pid %d", gen, slot, pid)
			}
		}
		for slot, pid := range old {
			if harness.Alive(pid) {
				t.Fatalf("reload to generation %d: old worker %d (pid %d) is alive", gen, slot, pid)
			}
		}
		if state, pid := s.status(); state != "RUNNING" || pid != baton {
			t.Fatalf("reload to generation %d: supervisorctl status app: %s pid %d, want RUNNING pid %d", gen, state, pid, baton)
		}
		harness.Eventually(t, 10*time.Second, "requests flowing after the reload", func() bool { return load.Done() >= before+100 })
	}
	// Capacity by signal, still under load: TTIN adds a fifth worker of
	// the serving generation, TTOU takes one away, no reload either way.
	serving := bySlot(t, st)
	s.mustCtl(t, "app: signalled", "signal", "TTIN", "app")
	st = s.waitStatus(t, "a fifth worker serving", func(st upgrader.Status) bool { return servingOf(st, 4) == 5 && len(st.Workers) == 5 })
	s.mustCtl(t, "app: signalled", "signal", "TTOU", "app")
	st = s.fleet(t, 4)
	requireSame(t, "after TTIN and TTOU", serving, bySlot(t, st), 0, 1, 2, 3)
	sum := requireNoFailures(t, load)
	t.Logf("3 × supervisorctl signal HUP app with 4 workers: %d requests, %d failed, answered by %d worker pids; reloads took %s",
		sum.Requests, sum.Failed, len(sum.PIDs), strings.Join(took, "; "))
	s.requireNoZombies(t, baton)

	before := bySlot(t, st)
	if err := syscall.Kill(before[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = s.waitStatus(t, "worker 1 restarted", func(st upgrader.Status) bool {
		for _, w := range st.Workers {
			if w.Index == 1 && w.PID != before[1] && w.State == "serving" {
				return len(st.Workers) == 4 && st.Restarts == 1
			}
		}
		return false
	})
	requireSame(t, "after worker 1 was killed", before, bySlot(t, st), 0, 2, 3)
	if state, pid := s.status(); state != "RUNNING" || pid != baton {
		t.Fatalf("after worker 1 was killed: supervisorctl status app: %s pid %d, want RUNNING pid %d", state, pid, baton)
	}

	s.mustCtl(t, "app: stopped", "stop", "app")
	pids := []int{baton}
	for _, w := range st.Workers {
		pids = append(pids, w.PID)
	}
	s.requireStopped(t, 1, pids...)
}

// fleet waits until baton status --json shows four workers of generation
// gen serving and nothing else, and returns that status.
func (s *supervisorCtl) fleet(t *testing.T, gen int) upgrader.Status {
	t.Helper()
	return s.waitStatus(t, fmt.Sprintf("4 workers of generation %d serving", gen), func(st upgrader.Status) bool {
		if len(st.Workers) != 4 {
			return false
		}
		for _, w := range st.Workers {
			if w.State != "serving" || w.Probation || w.Generation != gen {
				return false
			}
		}
		return true
	})
}

// waitStatus polls `baton status --json` of app's baton until cond holds.
func (s *supervisorCtl) waitStatus(t *testing.T, what string, cond func(upgrader.Status) bool) upgrader.Status {
	t.Helper()
	var st upgrader.Status
	harness.Eventually(t, 30*time.Second, what, func() bool {
		code, out, _ := harness.Run(t, 15*time.Second, "status", "--json", "--pidfile", s.pidfile)
		st = upgrader.Status{}
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && cond(st)
	})
	return st
}

// requireBatonServing waits until app's first generation serves, and
// returns baton's PID, which must be a child of supervisord.
func (s *supervisorCtl) requireBatonServing(t *testing.T) int {
	t.Helper()
	_, baton := s.status()
	if p, ok := harness.ReadProc(baton); !ok || p.PPID != s.cmd.Process.Pid {
		t.Fatalf("app's pid %d is not a child of supervisord %d: %+v", baton, s.cmd.Process.Pid, p)
	}
	harness.Eventually(t, 20*time.Second, "generation 1 serving", func() bool { return s.count(isReloadComplete) >= 1 })
	s.requireServing(t)
	return baton
}

// reloadsUnderLoad deploys n times under load, the way a deploy does it:
// each HUP brings a new worker and the old one goes, while supervisord
// sees app RUNNING with baton's PID throughout and no request fails. It
// returns the last worker's PID.
func (s *supervisorCtl) reloadsUnderLoad(t *testing.T, baton, n int) int {
	load := startLoad(t, s.url+"/")
	worker := s.workerPID(t)
	var took []string
	for i := 1; i <= n; i++ {
		before := load.Done()
		took = append(took, s.hup(t, i+1))
		next := s.workerPID(t)
		if next == worker || harness.Alive(worker) {
			t.Fatalf("reload %d: worker %d not replaced (now %d, old alive: %v)", i, worker, next, harness.Alive(worker))
		}
		worker = next
		if state, pid := s.status(); state != "RUNNING" || pid != baton {
			t.Fatalf("reload %d: supervisorctl status app: %s pid %d, want RUNNING pid %d", i, state, pid, baton)
		}
		s.requireNoZombies(t, baton)
		harness.Eventually(t, 10*time.Second, "requests flowing after the reload",
			func() bool { return load.Done() >= before+100 })
	}
	sum := requireNoFailures(t, load)
	if len(sum.PIDs) != n+1 {
		t.Errorf("answers came from %d worker pids, want %d (one per generation)", len(sum.PIDs), n+1)
	}
	t.Logf("reload took: %s", strings.Join(took, ", "))
	if got, err := os.ReadFile(s.pidfile); err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(baton) {
		t.Fatalf("pidfile says %q (%v), supervisord's pid is %d", got, err, baton)
	}
	return worker
}

// upgradeUnderLoad installs the build new over the program's baton at
// installed and runs `baton upgrade --wait` (the client being the build
// old) under load: baton takes over in place while supervisord sees no
// restart, `supervisorctl status app` showing the same PID RUNNING with
// an uptime that went on, and no request fails.
func (s *supervisorCtl) upgradeUnderLoad(t *testing.T, baton int, installed, old, new string) {
	before, up := s.uptime(t)
	workers := s.waitStatus(t, "baton's status", func(upgrader.Status) bool { return true })
	load := startLoad(t, s.url+"/")
	harness.Install(t, new, installed)
	code, stdout, stderr := harness.RunProgram(t, 40*time.Second, old, "upgrade", "--wait", "--pidfile", s.pidfile)
	if code != 0 || !strings.Contains(stdout, "upgrade-new") {
		t.Fatalf("baton upgrade --wait under supervisord: exit %d, %q %q", code, stdout, stderr)
	}
	after, upAfter := s.uptime(t)
	if before != baton || after != baton || upAfter < up {
		t.Fatalf("supervisorctl status app: pid %d up %s before, pid %d up %s after the upgrade; want pid %d and an uptime that went on",
			before, up, after, upAfter, baton)
	}
	st := s.waitStatus(t, "the new version serving", func(st upgrader.Status) bool { return strings.Contains(st.Version, "upgrade-new") })
	if st.PID != baton || fmt.Sprint(workerPIDs(st)) != fmt.Sprint(workerPIDs(workers)) {
		t.Fatalf("after the upgrade baton's status is %+v, want pid %d with workers %v", st, baton, workerPIDs(workers))
	}
	sum := requireNoFailures(t, load)
	if spawned := strings.Count(s.supervisordLog(), "spawned: 'app'"); spawned != 1 {
		t.Fatalf("supervisord spawned app %d times, want once:\n%s", spawned, s.supervisordLog())
	}
	s.requireNoZombies(t, baton)
	t.Logf("%s under load: %d POST requests, 0 failed; supervisorctl status app: RUNNING pid %d, uptime %s then %s",
		strings.TrimSpace(stdout), sum.Requests, baton, up, upAfter)
}

// uptime is app's PID and uptime as `supervisorctl status app` shows
// them, failing the test unless app is RUNNING.
func (s *supervisorCtl) uptime(t *testing.T) (int, time.Duration) {
	t.Helper()
	out, _ := s.ctl("status", "app")
	m := supervisorUptime.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("supervisorctl status app: %q, want RUNNING with a pid and an uptime", out)
	}
	pid, _ := strconv.Atoi(m[1])
	up := time.Duration(svAtoi(m[3]))*time.Hour + time.Duration(svAtoi(m[4]))*time.Minute + time.Duration(svAtoi(m[5]))*time.Second
	if m[2] != "" {
		up += time.Duration(svAtoi(m[2])) * 24 * time.Hour
	}
	return pid, up
}

var supervisorUptime = regexp.MustCompile(`RUNNING\s+pid (\d+), uptime (?:(\d+) days?, )?(\d+):(\d+):(\d+)`)

// supervisordLog is supervisord's own log: what it started and reaped.
func (s *supervisorCtl) supervisordLog() string {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(s.conf), "supervisord.log"))
	return string(b)
}

// hup is one deploy: `supervisorctl signal HUP app`, after which the
// reload it starts must end with generation gen serving. It says how long
// that took, as baton logs it and as supervisorctl's caller waits.
func (s *supervisorCtl) hup(t *testing.T, gen int) string {
	t.Helper()
	ended := s.count(isReloadEnd)
	start := time.Now()
	s.mustCtl(t, "app: signalled", "signal", "HUP", "app")
	harness.Eventually(t, 20*time.Second, fmt.Sprintf("reload to generation %d ended", gen), func() bool {
		return s.count(isReloadEnd) > ended
	})
	wall := time.Since(start)
	var end harness.Event
	for _, e := range s.events() {
		if isReloadEnd(e) {
			end = e
		}
	}
	if !isReloadComplete(end) || end.Int("gen") != gen {
		t.Fatalf("reload: %v, want generation %d complete", end, gen)
	}
	return fmt.Sprintf("%s (supervisorctl to complete: %s)", end.Str("took"), wall.Round(time.Millisecond))
}

// stopWithRequestInFlight requires that `supervisorctl stop app` drains:
// a request in flight when it starts is answered, and then baton and
// its worker are gone with nothing left behind.
func (s *supervisorCtl) stopWithRequestInFlight(t *testing.T, baton, worker int) {
	slow := harness.GetInBackground(s.url + "/slow?d=1s")
	harness.Eventually(t, 10*time.Second, "slow request in flight", func() bool {
		return strings.Contains(s.log(), fmt.Sprintf("slow request started pid=%d", worker))
	})
	start := time.Now()
	s.mustCtl(t, "app: stopped", "stop", "app")
	t.Logf("supervisorctl stop app with a 1s request in flight: %s", time.Since(start).Round(time.Millisecond))
	select {
	case a := <-slow:
		if a.Err != nil || !strings.Contains(a.Body, "slow done") {
			t.Fatalf("in-flight request cut by supervisorctl stop: %q %v", a.Body, a.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight request got no answer")
	}
	s.requireStopped(t, 1, baton, worker)
}

// requireStopped requires app STOPPED after baton's stops-th clean stop:
// none of pids alive, no process of the program left, no pidfile, the
// port closed and no zombie under supervisord.
func (s *supervisorCtl) requireStopped(t *testing.T, stops int, pids ...int) {
	t.Helper()
	if state, _ := s.status(); state != "STOPPED" {
		t.Fatalf("after stop, app is %s", state)
	}
	for _, pid := range pids {
		if harness.Alive(pid) {
			t.Fatalf("after stop, pid %d is alive", pid)
		}
	}
	if left := s.programProcs(); len(left) > 0 {
		t.Fatalf("after stop, processes of the program are left: %v", left)
	}
	if _, err := os.Stat(s.pidfile); !os.IsNotExist(err) {
		t.Fatalf("pidfile left behind by stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.url, "http://"), time.Second); err == nil {
		c.Close()
		t.Fatal("the port still accepts after stop")
	}
	if n := s.count(isStopped); n != stops {
		t.Fatalf("baton logged %d clean stops, want %d", n, stops)
	}
	s.requireNoZombies(t, 0)
}

// start is `supervisorctl start app`: a new baton, other than stopped,
// serves. It returns the new baton's PID.
func (s *supervisorCtl) start(t *testing.T, stopped int) int {
	s.mustCtl(t, "app: started", "start", "app")
	state, started := s.status()
	if state != "RUNNING" || started == stopped {
		t.Fatalf("after start: %s pid %d (was %d)", state, started, stopped)
	}
	s.requireServing(t)
	return started
}

// restart is `supervisorctl restart app`: baton stops cleanly (its second
// clean stop in this log) and a new one serves.
func (s *supervisorCtl) restart(t *testing.T, running int) {
	s.mustCtl(t, "app: started", "restart", "app")
	state, restarted := s.status()
	if state != "RUNNING" || restarted == running || harness.Alive(running) {
		t.Fatalf("after restart: %s pid %d, the previous baton %d alive: %v", state, restarted, running, harness.Alive(running))
	}
	s.requireServing(t)
	if n := s.count(isStopped); n != 2 {
		t.Fatalf("baton logged %d clean stops, want 2", n)
	}
	s.requireNoZombies(t, restarted)
}

// shutdown is `supervisorctl shutdown`: supervisord stops the program the
// same way and exits, leaving no process of the program.
func (s *supervisorCtl) shutdown(t *testing.T) {
	s.mustCtl(t, "Shut down", "shutdown")
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("supervisord still running 30s after supervisorctl shutdown")
	}
	if left := s.programProcs(); len(left) > 0 {
		t.Fatalf("after supervisord's shutdown, processes of the program are left: %v", left)
	}
}

func isReloadComplete(e harness.Event) bool { return e.Kind() == "reload_complete" }

func isReloadEnd(e harness.Event) bool {
	return e.Kind() == "reload_complete" || e.Kind() == "reload_failed"
}

func isStopped(e harness.Event) bool { return e.Kind() == "stopped" }

// supervisordConf writes a supervisord configuration in dir whose
// [program:app] is the example in scripts/supervisord/baton.conf, with its
// paths replaced by baton, the built test worker and dir, its address by
// addr, and batonFlags added to baton's.
func supervisordConf(t *testing.T, dir, addr, marker, baton string, batonFlags []string) (conf, appLog, pidfile string) {
	t.Helper()
	bin := harness.Build(t)
	example, err := os.ReadFile(filepath.Join(harness.ModuleRoot(), "scripts", "supervisord", "baton.conf"))
	if err != nil {
		t.Fatal(err)
	}
	appLog = filepath.Join(dir, "app.log")
	pidfile = filepath.Join(dir, "baton.pid")
	program := string(example)
	// supervisord must wait longer than baton's drain before its SIGKILL.
	wait := regexp.MustCompile(`(?m)^stopwaitsecs=(\d+)`).FindStringSubmatch(program)
	drain := regexp.MustCompile(`--drain-timeout (\d+)s`).FindStringSubmatch(program)
	if wait == nil || drain == nil {
		t.Fatal("scripts/supervisord/baton.conf: no stopwaitsecs or --drain-timeout in seconds")
	}
	if w, d := svAtoi(wait[1]), svAtoi(drain[1]); w <= d {
		t.Fatalf("scripts/supervisord/baton.conf: stopwaitsecs=%d is not above --drain-timeout %ds", w, d)
	}
	for _, r := range []struct{ old, new string }{
		{"/usr/local/bin/baton", strings.Join(append([]string{baton}, batonFlags...), " ")},
		{"/srv/app/current/server", bin.TestWorker},
		{"/srv/app/current", dir},
		{"/run/app/baton.pid", pidfile},
		{"127.0.0.1:8080", addr},
		{"/var/log/supervisor/app.log", appLog},
	} {
		if !strings.Contains(program, r.old) {
			t.Fatalf("scripts/supervisord/baton.conf no longer mentions %s", r.old)
		}
		program = strings.ReplaceAll(program, r.old, r.new)
	}
	sock := filepath.Join(dir, "supervisor.sock")
	if len(sock) > 100 { // unix socket names are limited to 108 bytes
		short, err := os.MkdirTemp("", "sv")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(short) })
		sock = filepath.Join(short, "s.sock")
	}
	conf = filepath.Join(dir, "supervisord.conf")
	// The marker finds every process of the program. GORACE: binaries
	// built with -race otherwise sleep a second at exit while goroutines
	// remain, which would add a second to every drain measured here.
	text := fmt.Sprintf(`[unix_http_server]
file=%[1]s
chmod=0700

[supervisord]
logfile=%[2]s/supervisord.log
pidfile=%[2]s/supervisord.pid
childlogdir=%[2]s
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%[1]s

%[3]s
environment=%[4]s,GORACE="atexit_sleep_ms=0"
`, sock, dir, program, marker)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf, appLog, pidfile
}

// startSupervisord runs supervisord in the foreground as a child of the
// test over a free loopback port, with the baton binary at baton and
// batonFlags added to app's command, and waits for app to be RUNNING.
func startSupervisord(t *testing.T, baton string, batonFlags ...string) *supervisorCtl {
	t.Helper()
	supervisord, err := exec.LookPath("supervisord")
	if err != nil {
		t.Fatal("supervisord is not installed (Debian package supervisor; scripts/test installs it)")
	}
	ctl, err := exec.LookPath("supervisorctl")
	if err != nil {
		t.Fatal("supervisorctl is not installed (Debian package supervisor; scripts/test installs it)")
	}
	addr := freePort(t)
	dir := t.TempDir()
	s := &supervisorCtl{t: t, ctlBin: ctl, url: "http://" + addr, exited: make(chan struct{})}
	s.marker = fmt.Sprintf("BATON_SUPERVISORD_TEST=%d-%d", os.Getpid(), time.Now().UnixNano())
	s.conf, s.appLog, s.pidfile = supervisordConf(t, dir, addr, s.marker, baton, batonFlags)

	s.cmd = exec.Command(supervisord, "--nodaemon", "--configuration", s.conf)
	s.cmd.Dir = dir
	s.cmd.Stdout = &s.output
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.cleanup)

	harness.Eventually(t, 20*time.Second, "supervisorctl status app: RUNNING", func() bool {
		state, _ := s.status()
		return state == "RUNNING"
	})
	return s
}

// cleanup is the last resort: whatever the test left running is stopped.
func (s *supervisorCtl) cleanup() {
	harness.Terminate(s.cmd.Process, s.exited, syscall.SIGTERM, 15*time.Second)
	for _, pid := range s.programProcs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	harness.CheckNoRace(s.t, s.log())
	if s.t.Failed() {
		s.t.Logf("supervisord output:\n%s", s.output.String())
		s.t.Logf("app log:\n%s", s.log())
	}
}

// ctl runs supervisorctl with args and returns its output.
func (s *supervisorCtl) ctl(args ...string) (string, error) {
	cmd := exec.Command(s.ctlBin, append([]string{"--configuration", s.conf}, args...)...)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
		}
	}()
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// mustCtl runs supervisorctl and fails the test unless its output
// contains want.
func (s *supervisorCtl) mustCtl(t *testing.T, want string, args ...string) string {
	t.Helper()
	out, err := s.ctl(args...)
	if !strings.Contains(out, want) {
		t.Fatalf("supervisorctl %s: %q (%v), want %q", strings.Join(args, " "), out, err, want)
	}
	return out
}

var supervisorStatusLine = regexp.MustCompile(`^app\s+([A-Z]+)\s*(?:pid (\d+),)?`)

// status is app's state and PID as `supervisorctl status app` shows them.
func (s *supervisorCtl) status() (state string, pid int) {
	out, _ := s.ctl("status", "app")
	m := supervisorStatusLine.FindStringSubmatch(out)
	if m == nil {
		return "", 0
	}
	pid, _ = strconv.Atoi(m[2])
	return m[1], pid
}

func (s *supervisorCtl) log() string {
	b, _ := os.ReadFile(s.appLog)
	return string(b)
}

// events are baton's JSON log events in the program's log, across every
// baton supervisord has run.
func (s *supervisorCtl) events() []harness.Event {
	var out []harness.Event
	sc := bufio.NewScanner(strings.NewReader(s.log()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e harness.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil && e["component"] == "baton" {
			out = append(out, e)
		}
	}
	return out
}

func (s *supervisorCtl) count(match func(harness.Event) bool) int {
	n := 0
	for _, e := range s.events() {
		if match(e) {
			n++
		}
	}
	return n
}

// programProcs are the processes started for the program (baton, the exec
// shim, workers and whatever they start), found by the marker in their
// environment.
func (s *supervisorCtl) programProcs() []int {
	var pids []int
	for _, p := range harness.Procs() {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID))
		if err != nil || p.State == "Z" {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if string(kv) == s.marker {
				pids = append(pids, p.PID)
				break
			}
		}
	}
	return pids
}

// workerPID asks the serving worker for its PID.
func (s *supervisorCtl) workerPID(t *testing.T) int {
	t.Helper()
	pid, err := strconv.Atoi(get(t, s.url+"/pid"))
	if err != nil {
		t.Fatalf("GET /pid: %v", err)
	}
	return pid
}

func (s *supervisorCtl) requireNoZombies(t *testing.T, batonPID int) {
	t.Helper()
	requireNoZombies(t, s.cmd.Process.Pid)
	if batonPID != 0 {
		requireNoZombies(t, batonPID)
	}
}

// requireServing waits until app answers on its address.
func (s *supervisorCtl) requireServing(t *testing.T) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	harness.Eventually(t, 20*time.Second, "app serving", func() bool {
		resp, err := client.Get(s.url + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "pid=")
	})
}

func svAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// ecoBuffer collects a child's output from the goroutines os/exec copies
// it with.
type ecoBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *ecoBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *ecoBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
