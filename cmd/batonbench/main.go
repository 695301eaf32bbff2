// Command batonbench measures what clients see while a server is replaced,
// side by side for four ways of doing it, with the same worker, the same
// constant-rate load (new connections and keep-alive) and the same number
// of reloads:
//
//   - baton: the test worker under a baton master, reloaded with kill -HUP;
//   - naive: the test worker binding its own port, stopped with TERM and
//     started again, which is what users do without a tool;
//   - socket-holder: a process that binds the port once and passes it to
//     the test worker with LISTEN_FDS, and restarts the worker behind it
//     (TERM, wait, start), the way systemd socket activation does;
//   - tableflip: a server built on github.com/cloudflare/tableflip that
//     upgrades itself on SIGHUP (its PID changes at every upgrade).
//
// For each it reports the requests started in the reload window (from the
// first signal until the last reload is done), how many failed, their
// latency, how long a reload took (signal until the old server is gone and
// the new one serves), the RSS of the process that holds the sockets, and
// whether the service's PID stayed the same. It prints a table and can
// write JSON. Load goes to 127.0.0.1 only and is bounded in count and time.
//
//	batonbench [-reloads 10] [-rate 400] [-json FILE]
//
// scripts/bench.sh builds the programs and runs it.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// Config is one benchmark run.
type Config struct {
	Reloads   int     `json:"reloads"`
	Rate      float64 `json:"rate_per_second"`
	NewConns  int     `json:"new_conn_loops"`
	KeepAlive int     `json:"keepalive_loops"`
	GapMS     int64   `json:"gap_ms"`

	gap                       time.Duration
	baton, worker, tableflip  string
	self                      string
	modes                     []string
	stepTimeout, modeDeadline time.Duration
}

// Machine is where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
}

// Result is one mode's row.
type Result struct {
	Mode     string         `json:"mode"`
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	Errors   map[string]int `json:"errors,omitempty"`
	P50MS    float64        `json:"p50_ms"`
	P99MS    float64        `json:"p99_ms"`
	MaxMS    float64        `json:"max_ms"`
	// ReloadMS is each reload's duration: signal until the old server is
	// gone and the new one serves.
	ReloadMS     []float64 `json:"reload_ms"`
	ReloadMeanMS float64   `json:"reload_mean_ms"`
	ReloadMaxMS  float64   `json:"reload_max_ms"`
	// MasterRSSKB is the RSS of the process that holds the sockets across
	// reloads (the baton master, the socket holder), after the reloads; 0
	// when there is none.
	MasterRSSKB int `json:"master_rss_kb,omitempty"`
	// PIDStable says whether the service's PID (what a supervisor
	// watches) was the same after the reloads as before.
	PIDStable bool `json:"pid_stable"`
	// ServerPIDs is how many server processes answered requests.
	ServerPIDs int `json:"server_pids"`
}

// Report is the whole run, as written with -json.
type Report struct {
	Machine Machine  `json:"machine"`
	Config  Config   `json:"config"`
	Command string   `json:"command"`
	Results []Result `json:"results"`
}

var allModes = []string{"baton", "naive", "socket-holder", "tableflip"}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		os.Exit(holdCmd(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "handoff" {
		os.Exit(handoffCmd(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "batonbench:", err)
		return 1
	}
	dir := filepath.Dir(self)
	cfg := Config{self: self}
	fs := flag.NewFlagSet("batonbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Reloads, "reloads", 10, "reloads per mode")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "requests per second over all client loops")
	fs.IntVar(&cfg.NewConns, "new", 4, "client loops opening a new connection per request")
	fs.IntVar(&cfg.KeepAlive, "keepalive", 4, "client loops reusing a keep-alive connection")
	fs.DurationVar(&cfg.gap, "gap", 500*time.Millisecond, "steady load before the first reload and between reloads")
	fs.StringVar(&cfg.baton, "baton", filepath.Join(dir, "baton"), "baton binary")
	fs.StringVar(&cfg.worker, "worker", filepath.Join(dir, "testworker"), "test worker binary")
	fs.StringVar(&cfg.tableflip, "tableflip", filepath.Join(dir, "tableflipworker"), "tableflip worker binary")
	modes := fs.String("modes", strings.Join(allModes, ","), "modes to run, comma-separated")
	jsonOut := fs.String("json", "", "also write the results as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfg.Reloads < 1 || cfg.Reloads > 1000 || cfg.Rate <= 0 || cfg.Rate > 20000 || cfg.NewConns+cfg.KeepAlive < 1 || cfg.gap <= 0 {
		fmt.Fprintln(stderr, "batonbench: want 1 to 1000 reloads, a rate up to 20000/s, at least one client loop and a positive gap")
		return 2
	}
	cfg.GapMS = cfg.gap.Milliseconds()
	cfg.stepTimeout = 30 * time.Second
	// Every mode's load stops by itself: warm-up, the reloads with their
	// gaps, and a generous allowance for slow reloads.
	cfg.modeDeadline = cfg.gap + time.Duration(cfg.Reloads)*(cfg.gap+2*time.Second) + 20*time.Second
	for _, m := range strings.Split(*modes, ",") {
		if !contains(allModes, m) {
			fmt.Fprintf(stderr, "batonbench: unknown mode %q (want some of %s)\n", m, strings.Join(allModes, ","))
			return 2
		}
		cfg.modes = append(cfg.modes, m)
	}
	for _, p := range []string{cfg.baton, cfg.worker, cfg.tableflip} {
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(stderr, "batonbench: %v (build it first: scripts/bench.sh does)\n", err)
			return 1
		}
	}
	// Servers that upgrade themselves leave their successor orphaned: be
	// its subreaper, so that it is ours to wait for, not init's.
	if err := setChildSubreaper(); err != nil {
		fmt.Fprintln(stderr, "batonbench: cannot become a subreaper:", err)
		return 1
	}

	rep := Report{Machine: machine(), Config: cfg, Command: "batonbench " + strings.Join(args, " ")}
	fmt.Fprintf(stdout, "machine: %d CPUs, %s, Linux %s, %s\n", rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.Kernel, rep.Machine.Go)
	fmt.Fprintf(stdout, "load: %.0f req/s over %d new-connection and %d keep-alive loops; %d reloads per mode, %s apart\n\n",
		cfg.Rate, cfg.NewConns, cfg.KeepAlive, cfg.Reloads, cfg.gap)
	failed := false
	for _, m := range cfg.modes {
		fmt.Fprintf(stderr, "batonbench: %s ...\n", m)
		r, err := runMode(cfg, m, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "batonbench: %s: %v\n", m, err)
			failed = true
			continue
		}
		rep.Results = append(rep.Results, r)
	}
	printTable(stdout, rep.Results)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(stderr, "batonbench:", err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

// server is one way of running and reloading the test server.
type server interface {
	// start runs it and returns once it answers.
	start() error
	// reload replaces it and returns once the old server is gone and the
	// new one serves.
	reload() error
	// servicePID is the PID a supervisor would watch.
	servicePID() int
	// holderPID is the process that keeps the sockets across reloads, or 0.
	holderPID() int
	// stop ends it and every process it started.
	stop() error
}

func runMode(cfg Config, mode string, logw io.Writer) (Result, error) {
	res := Result{Mode: mode}
	addr, err := freeAddr()
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	var s server
	switch mode {
	case "baton":
		s = &batonServer{cfg: cfg, addr: addr, logw: logw}
	case "naive":
		s = &naiveServer{cfg: cfg, addr: addr}
	case "socket-holder":
		s = &holderServer{cfg: cfg, addr: addr}
	case "tableflip":
		s = &tableflipServer{cfg: cfg, addr: addr, pidFile: filepath.Join(dir, "tableflip.pid")}
	}
	if err := s.start(); err != nil {
		s.stop()
		return res, fmt.Errorf("start: %w", err)
	}
	firstPID := s.servicePID()

	load, err := loadgen.Start(loadgen.Config{
		URL:         "http://" + addr + "/",
		NewConns:    cfg.NewConns,
		KeepAlive:   cfg.KeepAlive,
		Rate:        cfg.Rate,
		MaxDuration: cfg.modeDeadline,
		MaxRequests: int(cfg.Rate*cfg.modeDeadline.Seconds()) + 1000,
	})
	if err != nil {
		s.stop()
		return res, err
	}
	time.Sleep(cfg.gap) // steady load before the first reload

	from := time.Now()
	var to time.Time
	for i := 0; i < cfg.Reloads; i++ {
		if i > 0 {
			time.Sleep(cfg.gap)
		}
		t0 := time.Now()
		if err := s.reload(); err != nil {
			load.Stop()
			s.stop()
			return res, fmt.Errorf("reload %d: %w", i+1, err)
		}
		to = time.Now()
		res.ReloadMS = append(res.ReloadMS, ms(to.Sub(t0)))
	}
	if pid := s.holderPID(); pid > 0 {
		res.MasterRSSKB = rssKB(pid)
	}
	res.PIDStable = s.servicePID() == firstPID
	samples := load.Stop()
	stopErr := s.stop()

	sum := samples.Between(from, to).Summarize()
	res.Requests, res.Failed = sum.Requests, sum.Failed
	if len(sum.Errors) > 0 {
		res.Errors = sum.Errors
	}
	res.P50MS, res.P99MS, res.MaxMS = ms(sum.P50), ms(sum.P99), ms(sum.Max)
	res.ServerPIDs = len(sum.PIDs)
	for _, d := range res.ReloadMS {
		res.ReloadMeanMS += d / float64(len(res.ReloadMS))
		res.ReloadMaxMS = max(res.ReloadMaxMS, d)
	}
	res.ReloadMeanMS = round2(res.ReloadMeanMS)
	if stopErr != nil {
		return res, fmt.Errorf("stop: %w", stopErr)
	}
	return res, nil
}

// batonServer is the test worker under a baton master.
type batonServer struct {
	cfg    Config
	addr   string
	logw   io.Writer
	cmd    *exec.Cmd
	ends   chan string // "reload complete" or "reload failed: why", from the log's event field
	exited chan error
}

func (b *batonServer) start() error {
	b.cmd = exec.Command(b.cfg.baton, "--listen", "http=tcp://"+b.addr, "--log-format", "json",
		"--", b.cfg.worker)
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		return err
	}
	b.ends = make(chan string, 64)
	b.exited = make(chan error, 1)
	if err := b.cmd.Start(); err != nil {
		return err
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var e struct {
				Event, Error string
			}
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				fmt.Fprintf(b.logw, "baton: %s\n", sc.Bytes())
				continue
			}
			switch e.Event {
			case "reload_complete":
				b.ends <- "reload complete"
			case "reload_failed":
				b.ends <- "reload failed: " + e.Error
			}
		}
		b.exited <- b.cmd.Wait()
	}()
	return b.waitEnd()
}

func (b *batonServer) waitEnd() error {
	select {
	case end := <-b.ends:
		if end != "reload complete" {
			return errors.New(end)
		}
		return nil
	case err := <-b.exited:
		b.exited <- err
		return fmt.Errorf("baton exited: %v", err)
	case <-time.After(b.cfg.stepTimeout):
		return fmt.Errorf("no reload end within %s", b.cfg.stepTimeout)
	}
}

func (b *batonServer) reload() error {
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	return b.waitEnd()
}

func (b *batonServer) servicePID() int { return b.cmd.Process.Pid }
func (b *batonServer) holderPID() int  { return b.cmd.Process.Pid }

func (b *batonServer) stop() error {
	if b.cmd == nil || b.cmd.Process == nil {
		return nil
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.exited:
		return err
	case <-time.After(b.cfg.stepTimeout):
		b.cmd.Process.Kill()
		return fmt.Errorf("baton still running %s after TERM", b.cfg.stepTimeout)
	}
}

// naiveServer is the test worker binding its own port, restarted by stop
// and start.
type naiveServer struct {
	cfg  Config
	addr string
	cur  *child
}

func (n *naiveServer) start() error {
	c, err := startChild(exec.Command(n.cfg.worker, "-addr", n.addr))
	if err != nil {
		return err
	}
	n.cur = c
	return waitServes(n.addr, c.pid, n.cfg.stepTimeout)
}

func (n *naiveServer) reload() error {
	if err := n.cur.terminate(n.cfg.stepTimeout); err != nil {
		return err
	}
	return n.start()
}

func (n *naiveServer) servicePID() int { return n.cur.pid }
func (n *naiveServer) holderPID() int  { return 0 }
func (n *naiveServer) stop() error {
	if n.cur == nil {
		return nil
	}
	return n.cur.terminate(n.cfg.stepTimeout)
}

// holderServer is the test worker behind a process that holds its socket
// (batonbench hold), restarted there by TERM, wait, start.
type holderServer struct {
	cfg    Config
	addr   string
	holder *child
	pid    int // the current worker's
}

func (h *holderServer) start() error {
	c, err := startChild(exec.Command(h.cfg.self, "hold", "-addr", h.addr, "--", h.cfg.worker))
	if err != nil {
		return err
	}
	h.holder = c
	h.pid, err = waitNewPID(h.addr, 0, h.cfg.stepTimeout)
	return err
}

func (h *holderServer) reload() error {
	if err := syscall.Kill(h.holder.pid, syscall.SIGHUP); err != nil {
		return err
	}
	pid, err := waitNewPID(h.addr, h.pid, h.cfg.stepTimeout)
	h.pid = pid
	return err
}

// servicePID is the worker's: the holder stands in for the service
// manager (systemd), which owns the socket; the service is the server.
func (h *holderServer) servicePID() int { return h.pid }
func (h *holderServer) holderPID() int  { return h.holder.pid }
func (h *holderServer) stop() error {
	if h.holder == nil {
		return nil
	}
	return h.holder.terminate(h.cfg.stepTimeout)
}

// tableflipServer is a self-upgrading tableflip server.
type tableflipServer struct {
	cfg     Config
	addr    string
	pidFile string
	cur     *child
}

func (t *tableflipServer) start() error {
	c, err := startChild(exec.Command(t.cfg.tableflip, "-addr", t.addr, "-pidfile", t.pidFile))
	if err != nil {
		return err
	}
	t.cur = c
	return waitServes(t.addr, c.pid, t.cfg.stepTimeout)
}

func (t *tableflipServer) reload() error {
	old := t.cur
	if err := syscall.Kill(old.pid, syscall.SIGHUP); err != nil {
		return err
	}
	// The new process writes its PID once ready; the old one then drains
	// and exits, and its orphaned successor becomes our child.
	deadline := time.Now().Add(t.cfg.stepTimeout)
	var pid int
	for {
		b, _ := os.ReadFile(t.pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && pid != old.pid {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no new tableflip process within %s", t.cfg.stepTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-old.done:
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("old tableflip process %d still running after %s", old.pid, t.cfg.stepTimeout)
	}
	t.cur = adopt(pid)
	return nil
}

func (t *tableflipServer) servicePID() int { return t.cur.pid }
func (t *tableflipServer) holderPID() int  { return 0 }
func (t *tableflipServer) stop() error {
	if t.cur == nil {
		return nil
	}
	return t.cur.terminate(t.cfg.stepTimeout)
}

// child is a process of ours, started or adopted, waited for by PID.
type child struct {
	pid  int
	done chan struct{}
}

func startChild(cmd *exec.Cmd) (*child, error) {
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	// Waited for by PID below, like the adopted ones.
	cmd.Process.Release()
	return adopt(pid), nil
}

// adopt waits for pid, which must be our child, in the background.
func adopt(pid int) *child {
	c := &child{pid: pid, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			var ws syscall.WaitStatus
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if !errors.Is(err, syscall.EINTR) {
				return
			}
		}
	}()
	return c
}

func (c *child) terminate(d time.Duration) error {
	syscall.Kill(c.pid, syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(d):
		syscall.Kill(c.pid, syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("pid %d still running %s after TERM", c.pid, d)
	}
}

// cleanEnv is our environment without socket-activation variables, so a
// server binds its own port unless given one on purpose.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "NOTIFY_SOCKET", "BATON_EXEC_SHIM":
			continue
		}
		env = append(env, kv)
	}
	return env
}

var probe = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   5 * time.Second,
}

// askPID asks the server on addr for its PID, on a new connection.
func askPID(addr string) (int, error) {
	resp, err := probe.Get("http://" + addr + "/pid")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitServes waits until the server answering on addr is pid.
func waitServes(addr string, pid int, d time.Duration) error {
	got, err := waitNewPID(addr, 0, d)
	if err == nil && got != pid {
		err = fmt.Errorf("%s is answered by pid %d, want %d", addr, got, pid)
	}
	return err
}

// waitNewPID waits until addr is answered by a process other than old.
func waitNewPID(addr string, old int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		pid, err := askPID(addr)
		if err == nil && pid != old {
			return pid, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s not answered by a new server within %s (last: pid %d, %v)", addr, d, pid, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// holdCmd is the socket holder: it binds the address once, passes the
// socket to the worker as fd 3 with LISTEN_FDS, and on SIGHUP restarts the
// worker behind it (TERM, wait for it to exit, start a new one), as
// systemd does for a socket-activated service. TERM stops it.
func holdCmd(args []string) int {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to bind")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	command := fs.Args()
	if len(command) == 0 {
		fmt.Fprintln(os.Stderr, "batonbench hold: no worker command")
		return 2
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "batonbench hold:", err)
		return 1
	}
	sock, err := l.(*net.TCPListener).File()
	if err != nil {
		fmt.Fprintln(os.Stderr, "batonbench hold:", err)
		return 1
	}
	l.Close() // sock keeps the socket
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	start := func() (*exec.Cmd, chan error, error) {
		// LISTEN_PID must be the worker's own PID: a shell learns its PID
		// and execs the worker in place.
		cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`}, command...)...)
		cmd.Env = append(cleanEnv(), "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
		cmd.ExtraFiles = []*os.File{sock}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, nil, err
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return cmd, done, nil
	}
	cmd, done, err := start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "batonbench hold:", err)
		return 1
	}
	for {
		select {
		case err := <-done:
			fmt.Fprintf(os.Stderr, "batonbench hold: worker exited on its own: %v\n", err)
			return 1
		case s := <-sigs:
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
			if s != syscall.SIGHUP {
				return 0
			}
			if cmd, done, err = start(); err != nil {
				fmt.Fprintln(os.Stderr, "batonbench hold:", err)
				return 1
			}
		}
	}
}

func printTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\trequests\tfailed\tp50\tp99\tmax\treload mean\treload max\tmaster RSS\tPID stable\t")
	for _, r := range results {
		rss := "-"
		if r.MasterRSSKB > 0 {
			rss = fmt.Sprintf("%.1f MB", float64(r.MasterRSSKB)/1024)
		}
		stable := "no"
		if r.PIDStable {
			stable = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Mode, r.Requests, r.Failed,
			fmtMS(r.P50MS), fmtMS(r.P99MS), fmtMS(r.MaxMS), fmtMS(r.ReloadMeanMS), fmtMS(r.ReloadMaxMS), rss, stable)
	}
	tw.Flush()
	for _, r := range results {
		if r.Failed == 0 {
			continue
		}
		kinds := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			kinds = append(kinds, k)
		}
		sort.Slice(kinds, func(i, j int) bool { return r.Errors[kinds[i]] > r.Errors[kinds[j]] })
		for i, k := range kinds {
			if i == 3 {
				break
			}
			fmt.Fprintf(w, "  %s: %d× %s\n", r.Mode, r.Errors[k], shortErr(k))
		}
	}
}

// shortErr drops the URL that every client error repeats.
func shortErr(s string) string {
	if i := strings.LastIndex(s, "\": "); i >= 0 {
		return s[i+3:]
	}
	return s
}

func fmtMS(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

func ms(d time.Duration) float64 { return round2(float64(d) / float64(time.Millisecond)) }

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// rssKB is VmRSS of pid in kB, 0 if unknown.
func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
