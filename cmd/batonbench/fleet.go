package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/proc"
)

// fleet is several workers of one server behind the process that replaces
// them all on demand: a baton master, PM2's daemon, a uWSGI master.
type fleet interface {
	// start runs it and returns once every worker answers.
	start() error
	// reload replaces every worker and returns the span from the request
	// (the signal, the command) until the last old worker is gone and the
	// new ones serve.
	reload() (span, error)
	// masterPID is the process that stays across reloads.
	masterPID() int
	// stop ends it and every process it started.
	stop() error
}

// phased is a fleet whose last reload had a start phase, from its request
// until the last new worker was ready, and then a drain phase. startCPU is
// the CPU time the new workers had used when each was ready: their start,
// the exec shim's included.
type phased interface {
	lastReady() time.Time
	startCPU() time.Duration
}

// batonFleet is a server under a baton master with --workers.
type batonFleet struct {
	cfg    Config
	logw   io.Writer
	args   []string // baton's, the worker command after "--"
	master *batonProc
	gen    int
	ready  time.Time     // the last reload's last worker_ready
	cpu    time.Duration // its new workers' CPU time, each when ready
}

func (b *batonFleet) start() error {
	m, err := startBaton(b.cfg, b.logw, b.args...)
	if err != nil {
		return err
	}
	b.master, b.gen = m, 1
	_, err = m.next(func(e event) bool { return isReloadComplete(e) && e.Gen == 1 })
	return err
}

func (b *batonFleet) reload() (span, error) {
	t0 := time.Now()
	if err := b.master.hup(); err != nil {
		return span{}, err
	}
	b.gen++
	b.cpu = 0
	e, err := b.master.next(func(e event) bool {
		if e.Event == "worker_ready" && e.Gen == b.gen {
			b.ready = e.Time
			ns, _ := cpuNS(e.PID) // read a little after the event: an upper bound
			b.cpu += time.Duration(ns)
		}
		return isReloadComplete(e) && e.Gen == b.gen
	})
	if err != nil {
		return span{}, err
	}
	// reload_complete is logged once every slot serves the new generation
	// and every old worker has exited.
	return span{t0, e.Time}, nil
}

func (b *batonFleet) masterPID() int { return b.master.cmd.Process.Pid }

func (b *batonFleet) lastReady() time.Time { return b.ready }

func (b *batonFleet) startCPU() time.Duration { return b.cpu }

func (b *batonFleet) stop() error {
	if b.master == nil {
		return nil
	}
	return b.master.stop()
}

// pm2Fleet is a Node.js server in PM2's cluster mode: PM2's daemon is the
// cluster's primary, holds the port and hands each connection to an
// instance; `pm2 reload` replaces the instances, two at a time.
type pm2Fleet struct {
	cfg     Config
	pm2     string
	home    string // PM2_HOME, of this run alone
	script  string
	addr    string
	workers int
	daemon  int
}

// pm2Name is the app's name in PM2's list.
const pm2Name = "batonbench"

func (p *pm2Fleet) env() []string {
	// PM2 stops an instance with SIGINT unless told otherwise; the server
	// drains on SIGTERM, as it does under baton.
	return append(workerEnv(), "PM2_HOME="+p.home, "PM2_KILL_SIGNAL=SIGTERM")
}

// run runs the pm2 command with args and returns once it has exited.
func (p *pm2Fleet) run(args ...string) error {
	cmd := exec.Command(p.pm2, args...)
	cmd.Env = p.env()
	cmd.Dir = filepath.Dir(p.script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pm2 %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (p *pm2Fleet) start() error {
	if err := p.run("start", p.script, "--name", pm2Name, "-i", strconv.Itoa(p.workers), "--", p.addr); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(p.home, "pm2.pid"))
	if err != nil {
		return fmt.Errorf("pm2's daemon: %w", err)
	}
	if p.daemon, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		return fmt.Errorf("pm2's daemon: pid file: %w", err)
	}
	return waitWorkers(p.addr, p.workers, p.cfg.stepTimeout)
}

func (p *pm2Fleet) reload() (span, error) {
	old := proc.Children(p.daemon)
	t0 := time.Now()
	// pm2 reload returns once every old instance has been stopped.
	if err := p.run("reload", pm2Name); err != nil {
		return span{}, err
	}
	if err := waitGone(old, p.cfg.stepTimeout); err != nil {
		return span{}, err
	}
	return span{t0, time.Now()}, nil
}

func (p *pm2Fleet) masterPID() int { return p.daemon }

func (p *pm2Fleet) stop() error {
	if p.daemon == 0 {
		if _, err := os.Stat(filepath.Join(p.home, "pm2.pid")); err != nil {
			return nil // no daemon ever started
		}
		return p.run("kill")
	}
	kids := proc.Children(p.daemon)
	err := p.run("kill")
	if err == nil {
		err = waitGone(append(kids, p.daemon), p.cfg.stepTimeout)
	}
	return err
}

// uwsgiFleet is a WSGI app under uWSGI's master with several workers
// (--processes), which replaces them one at a time on a chain reload ("c"
// on its master FIFO): it stops a worker, forks its replacement, waits
// until that one accepts, then goes on with the next.
type uwsgiFleet struct {
	cfg     Config
	cmd     *exec.Cmd
	fifo    string
	addr    string
	workers int
	main    *child
	chained chan struct{} // a "chain reloading complete" line
	mu      sync.Mutex
	tail    []string // uWSGI's last lines, for errors
}

func newUWSGIFleet(cfg Config, uwsgi, dir, addr, tmp string, workers int) *uwsgiFleet {
	fifo := filepath.Join(tmp, "uwsgi.fifo")
	args := append([]string{"--http-socket", addr}, uwsgiAppArgs...)
	args = append(args, "--master", "--processes", strconv.Itoa(workers), "--lazy-apps", "--master-fifo", fifo)
	cmd := exec.Command(uwsgi, args...)
	cmd.Dir = dir
	return &uwsgiFleet{cfg: cfg, cmd: cmd, fifo: fifo, addr: addr, workers: workers, chained: make(chan struct{}, 16)}
}

// uwsgiAppArgs run the WSGI app of examples/uwsgi the same way standalone
// and under baton: the Python 3 plugin, no per-request log line, and
// "Connection: close" on every answer (uWSGI's HTTP closes the connection
// after each answer anyway; without the header a keep-alive client sends
// its next request on a closed connection and loses it, reload or not).
var uwsgiAppArgs = []string{"--plugin", "python3", "--wsgi-file", "app.py",
	"--add-header", "Connection: close", "--disable-logging"}

func (u *uwsgiFleet) start() error {
	u.cmd.Env = workerEnv()
	stderr, err := u.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := u.cmd.Start(); err != nil {
		return err
	}
	pid := u.cmd.Process.Pid
	u.cmd.Process.Release() // waited for by PID, like every child here
	u.main = adopt(pid)
	go u.read(stderr)
	return waitWorkers(u.addr, u.workers, u.cfg.stepTimeout)
}

// read follows uWSGI's log, keeping its tail and noting each completed
// chain reload.
func (u *uwsgiFleet) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		u.mu.Lock()
		u.tail = append(u.tail, line)
		if len(u.tail) > 20 {
			u.tail = u.tail[1:]
		}
		u.mu.Unlock()
		if strings.Contains(line, "chain reloading complete") {
			select {
			case u.chained <- struct{}{}:
			default:
			}
		}
	}
}

func (u *uwsgiFleet) reload() (span, error) {
	for len(u.chained) > 0 {
		<-u.chained
	}
	old := proc.Children(u.main.pid)
	t0 := time.Now()
	if err := os.WriteFile(u.fifo, []byte("c"), 0); err != nil {
		return span{}, fmt.Errorf("uWSGI's master FIFO: %w", err)
	}
	select {
	case <-u.chained:
	case <-u.main.done:
		return span{}, fmt.Errorf("uWSGI exited during a chain reload:\n%s", u.lastLines())
	case <-time.After(u.cfg.stepTimeout):
		return span{}, fmt.Errorf("no completed chain reload within %s:\n%s", u.cfg.stepTimeout, u.lastLines())
	}
	if err := waitGone(old, u.cfg.stepTimeout); err != nil {
		return span{}, err
	}
	return span{t0, time.Now()}, nil
}

func (u *uwsgiFleet) lastLines() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.tail, "\n")
}

func (u *uwsgiFleet) masterPID() int { return u.main.pid }

func (u *uwsgiFleet) stop() error {
	if u.main == nil {
		return nil
	}
	// INT is uWSGI's stop; TERM would reload it.
	syscall.Kill(u.main.pid, syscall.SIGINT)
	select {
	case <-u.main.done:
		return nil
	case <-time.After(u.cfg.stepTimeout):
		syscall.Kill(u.main.pid, syscall.SIGKILL)
		<-u.main.done
		return fmt.Errorf("uWSGI still running %s after INT", u.cfg.stepTimeout)
	}
}

var answerPID = regexp.MustCompile(`pid=(\d+)`)

// waitWorkers waits until n different processes have answered a GET of
// addr, each on a new connection: every worker serves.
func waitWorkers(addr string, n int, d time.Duration) error {
	seen := map[int]bool{}
	var err error
	if poll(d, func() bool {
		var resp *http.Response
		if resp, err = probe.Get("http://" + addr + "/"); err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := answerPID.FindSubmatch(b); m != nil {
			pid, _ := strconv.Atoi(string(m[1]))
			seen[pid] = true
		}
		return len(seen) >= n
	}) {
		return nil
	}
	return fmt.Errorf("%s: %d of %d workers answered within %s (last error: %v)", addr, len(seen), n, d, err)
}

// waitGone waits until none of pids is alive: each has exited (a zombie
// has) or is gone.
func waitGone(pids []int, d time.Duration) error {
	var alive []int
	if poll(d, func() bool {
		alive = alive[:0]
		for _, pid := range pids {
			// An error: gone, or going as it is read.
			if s, err := proc.ReadStat(pid); err == nil && !s.Dead() {
				alive = append(alive, pid)
			}
		}
		return len(alive) == 0
	}) {
		return nil
	}
	return fmt.Errorf("processes %v still running %s later", alive, d)
}
