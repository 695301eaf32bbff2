package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"
	"time"
)

// batonbench handoff measures what baton adds to a reload before the old
// generation is told to drain, for a server that takes -start to start:
//
//	batonbench handoff [-start 300ms] [-reloads 10] [-json FILE]
//
// First the test worker runs alone, started -reloads times: its own start
// is the time from exec until it answers a request. Then it runs under
// baton, once with --ready accepting (the worker sends no READY=1) and
// once with --ready notify, and is reloaded -reloads times: a handoff is
// the time from the SIGHUP until baton logs "draining" for the old
// generation (the log's timestamp). The overhead is a handoff less the
// median own start: the exec shim, the runtime's start, and noticing that
// the new generation is ready. No load is sent: the requests that measure
// the own start go to 127.0.0.1.

// HandoffResult is one readiness mode's row.
type HandoffResult struct {
	Ready string `json:"ready"`
	// HandoffMS is each reload's SIGHUP → old generation told to drain.
	HandoffMS []float64 `json:"handoff_ms"`
	// OverheadMS is each handoff less the median own start.
	OverheadMS       []float64 `json:"overhead_ms"`
	OverheadMedianMS float64   `json:"overhead_median_ms"`
	OverheadMaxMS    float64   `json:"overhead_max_ms"`
}

// HandoffReport is the whole run, as written with -json.
type HandoffReport struct {
	Machine Machine `json:"machine"`
	StartMS float64 `json:"start_ms"` // the worker's -ready-after
	// OwnStartMS is each start of the worker alone: exec until it answers.
	OwnStartMS       []float64       `json:"own_start_ms"`
	OwnStartMedianMS float64         `json:"own_start_median_ms"`
	Results          []HandoffResult `json:"results"`
}

func handoffCmd(args []string, stdout, stderr io.Writer) int {
	cfg := Config{}
	fs := flag.NewFlagSet("batonbench handoff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	start := fs.Duration("start", 300*time.Millisecond, "how long the worker takes to start (its -ready-after)")
	fs.IntVar(&cfg.Reloads, "reloads", 10, "reloads per readiness mode, and starts of the worker alone")
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "batonbench:", err)
		return 1
	}
	dir := filepath.Dir(self)
	fs.StringVar(&cfg.baton, "baton", filepath.Join(dir, "baton"), "baton binary")
	fs.StringVar(&cfg.worker, "worker", filepath.Join(dir, "testworker"), "test worker binary")
	jsonOut := fs.String("json", "", "also write the results as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfg.Reloads < 1 || cfg.Reloads > 1000 || *start < 0 || *start > time.Minute {
		fmt.Fprintln(stderr, "batonbench handoff: want 1 to 1000 reloads and a start from 0 to 1m")
		return 2
	}
	cfg.stepTimeout = 30*time.Second + *start
	if !binariesExist(stderr, cfg.baton, cfg.worker) {
		return 1
	}

	rep := HandoffReport{Machine: machine(), StartMS: ms(*start)}
	printMachine(stdout, rep.Machine)
	readyAfter := "-ready-after=" + start.String()
	for i := 0; i < cfg.Reloads; i++ {
		d, err := ownStart(cfg, readyAfter)
		if err != nil {
			fmt.Fprintln(stderr, "batonbench handoff: the worker alone:", err)
			return 1
		}
		rep.OwnStartMS = append(rep.OwnStartMS, ms(d))
	}
	rep.OwnStartMedianMS = median(rep.OwnStartMS)
	fmt.Fprintf(stdout, "worker started alone %d times (-ready-after %s): exec until it answers, median %s, max %s\n\n",
		cfg.Reloads, start, fmtMS(rep.OwnStartMedianMS), fmtMS(maxOf(rep.OwnStartMS)))

	for _, ready := range []string{"accepting", "notify"} {
		workerArgs := []string{readyAfter}
		if ready == "accepting" {
			workerArgs = append(workerArgs, "-never-ready") // only accepting can tell
		}
		handoffs, err := handoffs(cfg, ready, workerArgs, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "batonbench handoff: --ready %s: %v\n", ready, err)
			return 1
		}
		r := HandoffResult{Ready: ready}
		for _, h := range handoffs {
			r.HandoffMS = append(r.HandoffMS, ms(h))
			r.OverheadMS = append(r.OverheadMS, round2(ms(h)-rep.OwnStartMedianMS))
		}
		r.OverheadMedianMS, r.OverheadMaxMS = median(r.OverheadMS), maxOf(r.OverheadMS)
		rep.Results = append(rep.Results, r)
	}

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "--ready\tHUP → drain median\tmax\toverhead median\tmax\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Ready,
			fmtMS(median(r.HandoffMS)), fmtMS(maxOf(r.HandoffMS)), fmtMS(r.OverheadMedianMS), fmtMS(r.OverheadMaxMS))
	}
	tw.Flush()
	if *jsonOut != "" && !writeJSON(stderr, *jsonOut, rep) {
		return 1
	}
	return 0
}

// ownStart runs the worker alone and returns the time from its start until
// it first answers a request.
func ownStart(cfg Config, args ...string) (time.Duration, error) {
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	c, err := startChild(exec.Command(cfg.worker, append(args, "-addr", addr)...))
	if err != nil {
		return 0, err
	}
	defer c.terminate(cfg.stepTimeout)
	// Polled every millisecond: the worker binds only once it has started,
	// so until then the connection is refused.
	if err := waitServes(addr, c.pid, cfg.stepTimeout); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// handoffs runs the worker under baton with --ready ready, reloads it
// cfg.Reloads times, and returns each reload's SIGHUP → "draining".
func handoffs(cfg Config, ready string, workerArgs []string, logw io.Writer) ([]time.Duration, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b, err := startBaton(cfg, logw, append([]string{"--listen", "http=tcp://" + addr, "--ready", ready,
		"--", cfg.worker}, workerArgs...)...)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	isEnd := func(gen int) func(event) bool {
		return func(e event) bool { return isReloadComplete(e) && e.Gen == gen }
	}
	if _, err := b.next(isEnd(1)); err != nil {
		return nil, fmt.Errorf("first generation: %w", err)
	}
	var out []time.Duration
	for gen := 2; gen <= cfg.Reloads+1; gen++ {
		time.Sleep(100 * time.Millisecond) // let the last reload's exit settle
		hup := time.Now()
		if err := b.hup(); err != nil {
			return nil, err
		}
		drain, err := b.next(func(e event) bool { return e.Event == "draining" && e.Gen == gen-1 })
		if err != nil {
			return nil, fmt.Errorf("reload %d: %w", gen-1, err)
		}
		out = append(out, drain.Time.Sub(hup))
		if _, err := b.next(isEnd(gen)); err != nil {
			return nil, fmt.Errorf("reload %d: %w", gen-1, err)
		}
	}
	return out, nil
}
