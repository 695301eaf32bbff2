package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// batonbench workers measures a rolling reload of several workers under
// POST load, and, side by side, what PM2's cluster mode and uWSGI's chain
// reload do with the same servers:
//
//	batonbench workers [-setups baton,baton-surge1] [-workers 4] [-reloads 5] [-runs 3] [-rate 0] [-json FILE]
//
// Each setup runs N workers of one server on 127.0.0.1. The load (every
// request a POST, which no client resends) warms up, runs steady, and
// then the fleet is reloaded -reloads times, -gap apart. A reload lasts
// from its request (SIGHUP to baton, the pm2 reload command, "c" on
// uWSGI's master FIFO) until every old worker has exited and the new ones
// serve. For the requests of the reload windows and of the steady load
// (outside them, from -settle after each reload) it reports failures,
// latency and throughput, and the ratio of the two throughputs. With
// -rate 0 every client loop sends its next request as soon as it has an
// answer: the load is as much as the machine serves, and the ratio is the
// share of the serving capacity left during a reload.
//
// A second table says where a reload's cost goes: for baton's setups,
// the start phase (until the last new worker is ready) and the drain
// phase apart, with the throughput in each and the CPU time the new
// workers had used when ready; for every setup, the requests a reload
// cost (what the steady throughput would have served in its window, less
// what was served) and the master's CPU time over it. -samples DIR writes
// every request as CSV, to follow a run in finer steps.
//
// The setups:
//
//	baton         the test worker, baton --workers N (--max-surge -surge, N by default)
//	baton-surge1  the test worker, baton --workers N --max-surge 1
//	baton-node    examples/node/server.js, baton --workers N --ready accepting
//	pm2           examples/node/server.js, pm2 start -i N, pm2 reload
//	baton-uwsgi   examples/uwsgi/app.py, uWSGI with 1 process per worker, baton --workers N --drain-signal HUP
//	uwsgi         examples/uwsgi/app.py, uWSGI --processes N --lazy-apps, chain reload
//
// and the groups go (baton, baton-surge1), node (baton-node, pm2),
// python (baton-uwsgi, uwsgi) and all. A setup whose programs are not
// installed is skipped with a line that says how to install them.

// WorkersConfig is one run of batonbench workers.
type WorkersConfig struct {
	Workers   int      `json:"workers"`
	Surge     int      `json:"max_surge,omitempty"` // of baton, baton-node, baton-uwsgi; 0 is baton's default, N
	Reloads   int      `json:"reloads"`
	Runs      int      `json:"runs"`
	Rate      float64  `json:"rate_per_second"` // 0: each loop sends on as soon as it has an answer
	NewConns  int      `json:"new_conn_loops"`
	KeepAlive int      `json:"keepalive_loops"`
	WarmupMS  int64    `json:"warmup_ms"`
	SteadyMS  int64    `json:"steady_ms"`
	GapMS     int64    `json:"gap_ms"`
	SettleMS  int64    `json:"settle_ms"`
	Setups    []string `json:"setups"`

	warmup, steady, gap, settle time.Duration
}

// WorkersRun is one run of one setup.
type WorkersRun struct {
	Setup string `json:"setup"`
	Run   int    `json:"run"`
	// Load is when the load ran: -samples' times count from its start.
	Load span `json:"load"`
	// Requests and Failed count every request of the run, warm-up and
	// reloads included.
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	Errors   map[string]int `json:"errors,omitempty"`
	// ReloadMS is each reload's request until the old workers are gone;
	// Reloads are their spans, and Ready the last new worker's readiness
	// in each, for a baton setup.
	ReloadMS []float64   `json:"reload_ms"`
	Reloads  []span      `json:"reloads"`
	Ready    []time.Time `json:"ready,omitempty"`
	Steady   WindowJSON  `json:"steady"`
	Reload   WindowJSON  `json:"reload"`
	// Ratio is the throughput in the reload windows over that of the
	// steady load; EachRatio is each reload's alone.
	Ratio     float64   `json:"ratio"`
	EachRatio []float64 `json:"each_ratio"`
	// StartPhase and DrainPhase split the reload windows of a baton
	// setup at the last new worker's worker_ready: before it, new workers
	// start beside the old ones; after it, the old ones drain. With
	// --max-surge below N the phases of the batches overlap, and the
	// start phase runs until the last batch is ready.
	StartPhase *WindowJSON `json:"start_phase,omitempty"`
	DrainPhase *WindowJSON `json:"drain_phase,omitempty"`
	StartRatio float64     `json:"start_ratio,omitempty"`
	DrainRatio float64     `json:"drain_ratio,omitempty"`
	// MasterCPUMS is the CPU time of the master (its threads) over each
	// reload; StartCPUMS, of a baton setup, that of each reload's new
	// workers, each read once it was ready.
	MasterCPUMS []float64 `json:"master_cpu_ms"`
	StartCPUMS  []float64 `json:"start_cpu_ms,omitempty"`
	// LostPerReload is what the reloads cost the clients, per reload:
	// the requests the steady throughput would have completed in the
	// reload windows, less those completed there.
	LostPerReload float64 `json:"lost_per_reload"`
	// Master is the process that stays across reloads, after them.
	Master     footprint `json:"master"`
	WorkerPIDs int       `json:"worker_pids"` // processes that answered
}

// WindowJSON is windowStats as reported.
type WindowJSON struct {
	Requests  int     `json:"requests"`
	Failed    int     `json:"failed"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	PerSecond float64 `json:"per_second"`
	Seconds   float64 `json:"seconds"`
}

func windowJSON(w windowStats) WindowJSON {
	return WindowJSON{Requests: w.Requests, Failed: w.Failed, P50MS: ms(w.P50), P99MS: ms(w.P99),
		PerSecond: round2(w.PerSecond()), Seconds: round2(w.Length.Seconds())}
}

// WorkersReport is the whole of batonbench workers, as written with -json.
type WorkersReport struct {
	Machine Machine       `json:"machine"`
	Config  WorkersConfig `json:"config"`
	Command string        `json:"command"`
	Skipped []string      `json:"skipped,omitempty"`
	Runs    []WorkersRun  `json:"runs"`
}

// setup is a server, several workers of it, and what replaces them.
type setup struct {
	name, what string
	needs      []string // programs: "node", "pm2", "uwsgi"
	fleet      func(w *workersEnv, addr, tmp string) fleet
}

// workersEnv is what the setups are made of: the programs and the
// examples directory.
type workersEnv struct {
	cfg      Config // the baton binary, the test worker, the step timeout
	wc       WorkersConfig
	logw     io.Writer
	examples string
	prog     map[string]string // "node", "pm2", "uwsgi" → path
	samples  string            // a directory for every request of every run, or ""
}

func (w *workersEnv) batonArgs(addr string, surge int, extra ...string) []string {
	args := []string{"--listen", "http=tcp://" + addr, "--workers", strconv.Itoa(w.wc.Workers)}
	if surge > 0 {
		args = append(args, "--max-surge", strconv.Itoa(surge))
	}
	return append(args, extra...)
}

var setups = []setup{
	{"baton", "test worker; baton --workers N", nil, func(w *workersEnv, addr, _ string) fleet {
		return &batonFleet{cfg: w.cfg, logw: w.logw, args: w.batonArgs(addr, w.wc.Surge, "--", w.cfg.worker)}
	}},
	{"baton-surge1", "test worker; baton --workers N --max-surge 1", nil, func(w *workersEnv, addr, _ string) fleet {
		return &batonFleet{cfg: w.cfg, logw: w.logw, args: w.batonArgs(addr, 1, "--", w.cfg.worker)}
	}},
	{"baton-node", "examples/node; baton --workers N --ready accepting", []string{"node"}, func(w *workersEnv, addr, _ string) fleet {
		dir := filepath.Join(w.examples, "node")
		return &batonFleet{cfg: w.cfg, logw: w.logw, args: w.batonArgs(addr, w.wc.Surge,
			"--ready", "accepting", "--dir", dir, "--", w.prog["node"], "server.js")}
	}},
	{"pm2", "examples/node; pm2 start -i N, pm2 reload", []string{"node", "pm2"}, func(w *workersEnv, addr, tmp string) fleet {
		return &pm2Fleet{cfg: w.cfg, pm2: w.prog["pm2"], home: filepath.Join(tmp, "pm2"),
			script: filepath.Join(w.examples, "node", "server.js"), addr: addr, workers: w.wc.Workers}
	}},
	{"baton-uwsgi", "examples/uwsgi; uWSGI of 1 process per worker, baton --workers N --drain-signal HUP", []string{"uwsgi"}, func(w *workersEnv, addr, _ string) fleet {
		args := append([]string{"--drain-signal", "HUP", "--dir", filepath.Join(w.examples, "uwsgi"), "--",
			w.prog["uwsgi"], "--protocol", "http"}, uwsgiAppArgs...)
		args = append(args, "--master", "--processes", "1", "--exit-on-reload")
		return &batonFleet{cfg: w.cfg, logw: w.logw, args: w.batonArgs(addr, w.wc.Surge, args...)}
	}},
	{"uwsgi", "examples/uwsgi; uWSGI --processes N --lazy-apps, chain reload", []string{"uwsgi"}, func(w *workersEnv, addr, tmp string) fleet {
		return newUWSGIFleet(w.cfg, w.prog["uwsgi"], filepath.Join(w.examples, "uwsgi"), addr, tmp, w.wc.Workers)
	}},
}

var setupGroups = map[string][]string{
	"go":     {"baton", "baton-surge1"},
	"node":   {"baton-node", "pm2"},
	"python": {"baton-uwsgi", "uwsgi"},
	"all":    {"baton", "baton-surge1", "baton-node", "pm2", "baton-uwsgi", "uwsgi"},
}

// parseSetups expands a comma-separated list of setups and groups, in
// order, each setup once.
func parseSetups(list string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(list, ",") {
		names, ok := setupGroups[name]
		if !ok {
			names = []string{name}
		}
		for _, n := range names {
			if !slices.ContainsFunc(setups, func(s setup) bool { return s.name == n }) {
				return nil, fmt.Errorf("unknown setup %q (want some of %s, or go, node, python, all)", name, setupNames())
			}
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

func setupNames() string {
	var names []string
	for _, s := range setups {
		names = append(names, s.name)
	}
	return strings.Join(names, ", ")
}

func findSetup(name string) setup {
	i := slices.IndexFunc(setups, func(s setup) bool { return s.name == name })
	return setups[i] // parseSetups let only known names through
}

// howToGet says how to install a missing program.
var howToGet = map[string]string{
	"node":  "Debian: apt-get install nodejs, or -node PATH",
	"pm2":   "npm install pm2 in a directory of your choice, then -pm2 DIR/node_modules/.bin/pm2",
	"uwsgi": "Debian: apt-get install uwsgi uwsgi-plugin-python3, or -uwsgi PATH",
}

// findProgram resolves a program a setup needs, or says why it cannot.
func findProgram(name, path string) (string, error) {
	if path == "" {
		path = name
	}
	p, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("%s not found (%s)", name, howToGet[name])
	}
	if name == "uwsgi" {
		if out, err := exec.Command(p, "--need-plugin", "python3", "--version").CombinedOutput(); err != nil {
			return "", fmt.Errorf("uwsgi has no python3 plugin (%s): %s", howToGet[name], strings.TrimSpace(string(out)))
		}
	}
	return p, nil
}

func workersCmd(args []string, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "batonbench:", err)
		return 1
	}
	dir := filepath.Dir(self)
	env := &workersEnv{logw: stderr, prog: map[string]string{}}
	wc := &env.wc
	fs := flag.NewFlagSet("batonbench workers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	list := fs.String("setups", "go", "setups or groups to run, comma-separated: "+setupNames()+"; go, node, python, all")
	fs.IntVar(&wc.Workers, "workers", 4, "workers of each setup")
	fs.IntVar(&wc.Surge, "surge", 0, "--max-surge of the baton setups that do not set it (0: baton's default, all workers at once)")
	fs.IntVar(&wc.Reloads, "reloads", 5, "reloads per run")
	fs.IntVar(&wc.Runs, "runs", 1, "runs of each setup, taken in turns")
	fs.Float64Var(&wc.Rate, "rate", 0, "requests per second over all client loops; 0: as fast as answers come")
	fs.IntVar(&wc.NewConns, "new", 4, "client loops opening a new connection per request")
	fs.IntVar(&wc.KeepAlive, "keepalive", 4, "client loops reusing a keep-alive connection")
	fs.DurationVar(&wc.warmup, "warmup", time.Second, "load before anything is measured")
	fs.DurationVar(&wc.steady, "steady", 3*time.Second, "steady load measured before the first reload")
	fs.DurationVar(&wc.gap, "gap", 2*time.Second, "load between reloads, and after the last")
	fs.DurationVar(&wc.settle, "settle", 250*time.Millisecond, "time after a reload left out of the steady load")
	fs.StringVar(&env.cfg.baton, "baton", filepath.Join(dir, "baton"), "baton binary")
	fs.StringVar(&env.cfg.worker, "worker", filepath.Join(dir, "testworker"), "test worker binary")
	fs.StringVar(&env.examples, "examples", "examples", "the repository's examples directory")
	node := fs.String("node", "", "node binary (default: node in PATH)")
	pm2 := fs.String("pm2", "", "pm2 command (default: pm2 in PATH)")
	uwsgi := fs.String("uwsgi", "", "uwsgi binary (default: uwsgi in PATH)")
	jsonOut := fs.String("json", "", "also write the results as JSON to `FILE`")
	fs.StringVar(&env.samples, "samples", "", "also write every request of each run to `DIR`/SETUP-RUN.csv")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if wc.Setups, err = parseSetups(*list); err != nil {
		fmt.Fprintln(stderr, "batonbench workers:", err)
		return 2
	}
	if wc.Workers < 1 || wc.Workers > 64 || wc.Surge < 0 || wc.Surge > wc.Workers || wc.Reloads < 1 || wc.Reloads > 100 ||
		wc.Runs < 1 || wc.Runs > 10 || wc.Rate < 0 || wc.Rate > 20000 || wc.NewConns < 0 || wc.KeepAlive < 0 ||
		wc.NewConns+wc.KeepAlive < 1 || wc.warmup < 0 || wc.steady <= 0 || wc.gap <= wc.settle || wc.settle < 0 {
		fmt.Fprintln(stderr, "batonbench workers: want 1 to 64 workers, a surge up to them, 1 to 100 reloads, 1 to 10 runs, "+
			"a rate up to 20000/s, at least one client loop, a positive steady time and a gap longer than the settling")
		return 2
	}
	wc.WarmupMS, wc.SteadyMS, wc.GapMS, wc.SettleMS = wc.warmup.Milliseconds(), wc.steady.Milliseconds(), wc.gap.Milliseconds(), wc.settle.Milliseconds()
	env.cfg.stepTimeout = 60 * time.Second
	if !binariesExist(stderr, env.cfg.baton, env.cfg.worker) {
		return 1
	}
	rep := WorkersReport{Machine: machine(), Config: *wc, Command: "batonbench workers " + strings.Join(args, " ")}
	paths := map[string]string{"node": *node, "pm2": *pm2, "uwsgi": *uwsgi}
	var run []setup
	for _, name := range wc.Setups {
		s := findSetup(name)
		missing := ""
		for _, p := range s.needs {
			path, err := findProgram(p, paths[p])
			if err != nil {
				missing = err.Error()
				break
			}
			env.prog[p] = path
		}
		if missing == "" && s.needs != nil {
			if _, err := os.Stat(filepath.Join(env.examples, "node", "server.js")); err != nil {
				missing = fmt.Sprintf("no examples directory at %s (run from the repository, or -examples DIR)", env.examples)
			}
		}
		if missing != "" {
			line := fmt.Sprintf("%s: skipped: %s", name, missing)
			fmt.Fprintln(stdout, line)
			rep.Skipped = append(rep.Skipped, line)
			continue
		}
		run = append(run, s)
	}
	if abs, err := filepath.Abs(env.examples); err == nil {
		env.examples = abs
	}

	printMachine(stdout, rep.Machine)
	load := "as fast as answers come"
	if wc.Rate > 0 {
		load = fmt.Sprintf("%.0f req/s", wc.Rate)
	}
	fmt.Fprintf(stdout, "load: POST, %s, over %d new-connection and %d keep-alive loops; %d workers; %d reloads per run, %s apart; %d runs\n\n",
		load, wc.NewConns, wc.KeepAlive, wc.Workers, wc.Reloads, wc.gap, wc.Runs)
	failed := false
	for r := 1; r <= wc.Runs; r++ {
		for _, s := range run {
			fmt.Fprintf(stderr, "batonbench workers: %s, run %d ...\n", s.name, r)
			res, err := runWorkers(env, s, r)
			if err != nil {
				fmt.Fprintf(stderr, "batonbench workers: %s, run %d: %v\n", s.name, r, err)
				failed = true
				continue
			}
			rep.Runs = append(rep.Runs, res)
		}
	}
	printWorkers(stdout, run, rep.Runs)
	if *jsonOut != "" && !writeJSON(stderr, *jsonOut, rep) {
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

// runWorkers runs one setup once: start, load, reloads, stop.
func runWorkers(env *workersEnv, s setup, run int) (WorkersRun, error) {
	wc := env.wc
	res := WorkersRun{Setup: s.name, Run: run}
	addr, err := freeAddr()
	if err != nil {
		return res, err
	}
	tmp, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)

	f := s.fleet(env, addr, tmp)
	if err := f.start(); err != nil {
		f.stop()
		return res, fmt.Errorf("start: %w", err)
	}
	// Every run stops by itself: its planned length, and a minute for each
	// reload at most.
	planned := wc.warmup + wc.steady + time.Duration(wc.Reloads)*(wc.gap+time.Minute)
	load, err := loadgen.Start(loadgen.Config{
		URL:         "http://" + addr + "/",
		PostBody:    []byte("batonbench"),
		NewConns:    wc.NewConns,
		KeepAlive:   wc.KeepAlive,
		Rate:        wc.Rate,
		MaxDuration: planned,
		MaxRequests: 50_000_000,
	})
	if err != nil {
		f.stop()
		return res, err
	}
	loaded := span{From: time.Now()}
	time.Sleep(wc.warmup + wc.steady)
	var reloads, starts, drains []span
	ph, isPhased := f.(phased)
	for i := 0; i < wc.Reloads; i++ {
		if i > 0 {
			time.Sleep(wc.gap)
		}
		cpu0, _ := cpuNS(f.masterPID())
		r, err := f.reload()
		if err != nil {
			load.Stop()
			f.stop()
			return res, fmt.Errorf("reload %d: %w", i+1, err)
		}
		cpu1, _ := cpuNS(f.masterPID())
		reloads = append(reloads, r)
		res.ReloadMS = append(res.ReloadMS, ms(r.dur()))
		res.Reloads = append(res.Reloads, r)
		res.MasterCPUMS = append(res.MasterCPUMS, ms(time.Duration(cpu1-cpu0)))
		if isPhased {
			ready := ph.lastReady()
			res.Ready = append(res.Ready, ready)
			starts, drains = append(starts, span{r.From, ready}), append(drains, span{ready, r.To})
			res.StartCPUMS = append(res.StartCPUMS, ms(ph.startCPU()))
		}
	}
	time.Sleep(wc.gap)
	loaded.To = time.Now()
	if pid := f.masterPID(); pid > 0 {
		res.Master, _ = readFootprint(pid)
	}
	samples := load.Stop()
	stopErr := f.stop()
	res.Load = loaded
	if env.samples != "" {
		if err := writeSamples(filepath.Join(env.samples, fmt.Sprintf("%s-%d.csv", s.name, run)), loaded.From, samples); err != nil {
			return res, err
		}
	}

	all := samples.Summarize()
	res.Requests, res.Failed, res.WorkerPIDs = all.Requests, all.Failed, len(all.PIDs)
	if len(all.Errors) > 0 {
		res.Errors = all.Errors
	}
	steady := measure(samples, steadySpans(loaded, wc.warmup, wc.settle, reloads))
	during := measure(samples, reloads)
	res.Steady, res.Reload = windowJSON(steady), windowJSON(during)
	if steady.PerSecond() > 0 {
		res.Ratio = round3(during.PerSecond() / steady.PerSecond())
		res.LostPerReload = round2((steady.PerSecond()*during.Length.Seconds() - float64(during.Completed)) / float64(len(reloads)))
		for _, r := range reloads {
			res.EachRatio = append(res.EachRatio, round3(measure(samples, []span{r}).PerSecond()/steady.PerSecond()))
		}
		if isPhased {
			st, dr := measure(samples, starts), measure(samples, drains)
			stJ, drJ := windowJSON(st), windowJSON(dr)
			res.StartPhase, res.DrainPhase = &stJ, &drJ
			res.StartRatio, res.DrainRatio = round3(st.PerSecond()/steady.PerSecond()), round3(dr.PerSecond()/steady.PerSecond())
		}
	}
	if stopErr != nil {
		return res, fmt.Errorf("stop: %w", stopErr)
	}
	return res, nil
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// printWorkers prints one row per setup, each number the range over its
// runs, then each setup's kinds of failure.
func printWorkers(w io.Writer, ran []setup, runs []WorkersRun) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "setup\truns\trequests\tfailed\treload\tsteady p50\tp99\treload p50\tp99\tsteady req/s\treload req/s\tratio\tmaster RssAnon\tfds\t")
	for _, s := range ran {
		var n int
		var req, fail, reload, sp50, sp99, rp50, rp99, sps, rps, ratio, rss, fds []float64
		for _, r := range runs {
			if r.Setup != s.name {
				continue
			}
			n++
			req, fail = append(req, float64(r.Requests)), append(fail, float64(r.Failed))
			reload = append(reload, r.ReloadMS...)
			sp50, sp99 = append(sp50, r.Steady.P50MS), append(sp99, r.Steady.P99MS)
			rp50, rp99 = append(rp50, r.Reload.P50MS), append(rp99, r.Reload.P99MS)
			sps, rps = append(sps, r.Steady.PerSecond), append(rps, r.Reload.PerSecond)
			ratio = append(ratio, r.Ratio)
			rss, fds = append(rss, float64(r.Master.RssAnonKB)/1024), append(fds, float64(r.Master.FDs))
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.name, n,
			rangeOf(req, fmtInt), rangeOf(fail, fmtInt), rangeOf(reload, fmtMS),
			rangeOf(sp50, fmtMS), rangeOf(sp99, fmtMS), rangeOf(rp50, fmtMS), rangeOf(rp99, fmtMS),
			rangeOf(sps, fmtInt), rangeOf(rps, fmtInt), rangeOf(ratio, fmtRatio),
			rangeOf(rss, func(v float64) string { return fmt.Sprintf("%.1f MB", v) }), rangeOf(fds, fmtInt))
	}
	tw.Flush()
	fmt.Fprintln(w)
	printPhases(w, ran, runs)
	for _, s := range ran {
		fmt.Fprintf(w, "%s: %s\n", s.name, s.what)
	}
	for _, s := range ran {
		errs := map[string]int{}
		for _, r := range runs {
			if r.Setup == s.name {
				for k, v := range r.Errors {
					errs[shortErr(k)] += v
				}
			}
		}
		kinds := make([]string, 0, len(errs))
		for k := range errs {
			kinds = append(kinds, k)
		}
		slices.SortFunc(kinds, func(a, b string) int { return errs[b] - errs[a] })
		for i, k := range kinds {
			if i == 3 {
				break
			}
			fmt.Fprintf(w, "  %s: %d× %s\n", s.name, errs[k], k)
		}
	}
}

// printPhases prints, for the setups whose reloads have phases, how long
// each phase lasted on average and the throughput in it over the steady
// one; for every setup, the requests a reload cost and the master's CPU
// time per reload; and for baton's, the new workers' CPU time per reload.
// Each number is the range over the runs (over the reloads for CPU).
func printPhases(w io.Writer, ran []setup, runs []WorkersRun) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "setup\tstart phase\tratio\tdrain phase\tratio\tlost per reload\tmaster CPU per reload\tnew workers' CPU\t")
	for _, s := range ran {
		var n int
		var startMS, startRatio, drainMS, drainRatio, lost, cpu, startCPU []float64
		for _, r := range runs {
			if r.Setup != s.name {
				continue
			}
			n++
			cpu, startCPU = append(cpu, r.MasterCPUMS...), append(startCPU, r.StartCPUMS...)
			lost = append(lost, r.LostPerReload)
			if r.StartPhase != nil {
				k := float64(len(r.ReloadMS))
				startMS, drainMS = append(startMS, r.StartPhase.Seconds*1000/k), append(drainMS, r.DrainPhase.Seconds*1000/k)
				startRatio, drainRatio = append(startRatio, r.StartRatio), append(drainRatio, r.DrainRatio)
			}
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.name, rangeOf(startMS, fmtMS), rangeOf(startRatio, fmtRatio),
			rangeOf(drainMS, fmtMS), rangeOf(drainRatio, fmtRatio), rangeOf(lost, fmtInt), rangeOf(cpu, fmtMS), rangeOf(startCPU, fmtMS))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// writeSamples writes every request to path as CSV: its start in
// milliseconds from zero, its latency in milliseconds, the PID that
// answered and the error.
func writeSamples(path string, zero time.Time, samples loadgen.Samples) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"start_ms", "latency_ms", "pid", "error"})
	for _, s := range samples {
		w.Write([]string{strconv.FormatFloat(ms(s.Start.Sub(zero)), 'f', 2, 64),
			strconv.FormatFloat(ms(s.Latency), 'f', 2, 64), strconv.Itoa(s.PID), s.Err})
	}
	w.Flush()
	return errors.Join(w.Error(), f.Close())
}
