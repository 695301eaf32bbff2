package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/proc"
)

// batonbench footprint measures what the master costs while its workers
// idle and after many reloads, for several worker counts:
//
//	batonbench footprint [-counts 1,4,32] [-reloads 100] [-reload-counts 1,4] [-idle 10s] [-json FILE]
//
// For each count it starts baton with that many test workers on
// 127.0.0.1 and a --pidfile (so a control socket too), sends no load, and reads the master's private memory
// (RssAnon), VmRSS and open fds from /proc: once every worker serves,
// and again after -idle, over which it also counts the master's CPU time
// (utime + stime, in clock ticks of 10 ms). For the counts in
// -reload-counts it then reloads -reloads times, each SIGHUP sent once the
// previous reload has completed, reads them a third time, and reports
// each reload's SIGHUP → reload_complete (every old worker gone) and the
// master's CPU time per reload.

// FootprintResult is one worker count's row.
type FootprintResult struct {
	Workers int       `json:"workers"`
	Started footprint `json:"started"`
	Idle    footprint `json:"idle"`
	// Keeper is the master's keeper when idle: with the master's PSS, what
	// baton itself takes (they share the binary's pages).
	Keeper footprint `json:"keeper"`
	// IdleTicks is the master's CPU time over the idle time.
	IdleTicks uint64 `json:"idle_ticks"`
	// FDKinds counts the master's open fds by kind, when idle.
	FDKinds map[string]int `json:"fd_kinds"`
	// Reloaded, ReloadMS and ReloadTicks are there when the count was
	// reloaded: the footprint after the reloads, each reload's SIGHUP →
	// reload_complete, and the master's CPU time over all of them.
	Reloaded    *footprint `json:"reloaded,omitempty"`
	ReloadMS    []float64  `json:"reload_ms,omitempty"`
	ReloadTicks uint64     `json:"reload_ticks,omitempty"`
}

// FootprintReport is the whole run, as written with -json.
type FootprintReport struct {
	Machine Machine           `json:"machine"`
	Command string            `json:"command"`
	IdleMS  int64             `json:"idle_ms"`
	Reloads int               `json:"reloads"`
	Results []FootprintResult `json:"results"`
}

func footprintCmd(args []string, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "batonbench:", err)
		return 1
	}
	dir := filepath.Dir(self)
	cfg := Config{stepTimeout: 60 * time.Second}
	fs := flag.NewFlagSet("batonbench footprint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	countList := fs.String("counts", "1,4,32", "worker counts, comma-separated")
	reloadList := fs.String("reload-counts", "1,4", "the worker counts also reloaded, comma-separated")
	reloads := fs.Int("reloads", 100, "reloads of each count in -reload-counts")
	idle := fs.Duration("idle", 10*time.Second, "idle time over which the master's CPU time is counted")
	fs.StringVar(&cfg.baton, "baton", filepath.Join(dir, "baton"), "baton binary")
	fs.StringVar(&cfg.worker, "worker", filepath.Join(dir, "testworker"), "test worker binary")
	jsonOut := fs.String("json", "", "also write the results as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	counts, err1 := parseCounts(*countList)
	reloadCounts, err2 := parseCounts(*reloadList)
	if err := errors.Join(err1, err2); err != nil || *reloads < 1 || *reloads > 10000 || *idle <= 0 || *idle > 10*time.Minute {
		fmt.Fprintln(stderr, "batonbench footprint: want worker counts from 1 to 256, 1 to 10000 reloads and an idle time up to 10m")
		return 2
	}
	if !binariesExist(stderr, cfg.baton, cfg.worker) {
		return 1
	}

	rep := FootprintReport{Machine: machine(), Command: "batonbench footprint " + strings.Join(args, " "),
		IdleMS: idle.Milliseconds(), Reloads: *reloads}
	printMachine(stdout, rep.Machine)
	for _, n := range counts {
		fmt.Fprintf(stderr, "batonbench footprint: %d workers ...\n", n)
		r, err := footprintOf(cfg, n, *idle, *reloads, slices.Contains(reloadCounts, n), stderr)
		if err != nil {
			fmt.Fprintf(stderr, "batonbench footprint: %d workers: %v\n", n, err)
			return 1
		}
		rep.Results = append(rep.Results, r)
	}
	printFootprint(stdout, rep)
	if *jsonOut != "" && !writeJSON(stderr, *jsonOut, rep) {
		return 1
	}
	return 0
}

// parseCounts parses "1,4,32".
func parseCounts(list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 256 {
			return nil, fmt.Errorf("%q is not a worker count from 1 to 256", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// footprintOf runs baton with n idle test workers and measures its master.
func footprintOf(cfg Config, n int, idle time.Duration, reloads int, reload bool, logw io.Writer) (FootprintResult, error) {
	r := FootprintResult{Workers: n}
	addr, err := freeAddr()
	if err != nil {
		return r, err
	}
	tmp, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	// With a pidfile, as under a supervisor: the master holds it locked
	// and serves the control socket next to it.
	b, err := startBaton(cfg, logw, "--pidfile", filepath.Join(tmp, "baton.pid"), "--listen", "http=tcp://"+addr,
		"--workers", strconv.Itoa(n), "--", cfg.worker)
	if err != nil {
		return r, err
	}
	defer b.stop()
	pid := b.cmd.Process.Pid
	if _, err := b.next(func(e event) bool { return isReloadComplete(e) && e.Gen == 1 }); err != nil {
		return r, fmt.Errorf("start: %w", err)
	}
	if r.Started, err = readFootprint(pid); err != nil {
		return r, err
	}
	t0, err := cpuTicks(pid)
	if err != nil {
		return r, err
	}
	time.Sleep(idle)
	t1, err := cpuTicks(pid)
	if err != nil {
		return r, err
	}
	r.IdleTicks = t1 - t0
	if r.Idle, err = readFootprint(pid); err != nil {
		return r, err
	}
	r.FDKinds = fdKinds(pid)
	if r.Keeper, err = keeperFootprint(pid); err != nil {
		return r, err
	}
	if !reload {
		return r, nil
	}
	for gen := 2; gen <= reloads+1; gen++ {
		hup := time.Now()
		if err := b.hup(); err != nil {
			return r, err
		}
		e, err := b.next(func(e event) bool { return isReloadComplete(e) && e.Gen == gen })
		if err != nil {
			return r, fmt.Errorf("reload %d: %w", gen-1, err)
		}
		r.ReloadMS = append(r.ReloadMS, ms(e.Time.Sub(hup)))
	}
	t2, err := cpuTicks(pid)
	if err != nil {
		return r, err
	}
	r.ReloadTicks = t2 - t1
	f, err := readFootprint(pid)
	if err != nil {
		return r, err
	}
	r.Reloaded = &f
	return r, nil
}

// keeperFootprint reads the footprint of the master's keeper, the child
// of master named keeper.Comm.
func keeperFootprint(master int) (footprint, error) {
	for _, kid := range proc.Children(master) {
		if s, err := proc.ReadStat(kid); err == nil && s.Comm == keeper.Comm {
			return readFootprint(kid)
		}
	}
	return footprint{}, fmt.Errorf("master %d has no child named %s", master, keeper.Comm)
}

// fdKinds counts pid's open fds by what they are: "socket", "pipe",
// "pidfd", "file" and, for other anonymous inodes, their kind.
func fdKinds(pid int) map[string]int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	out := map[string]int{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil {
			out[fdKind(link)]++
		}
	}
	return out
}

// fdKind names what an fd's /proc link points to.
func fdKind(link string) string {
	switch {
	case strings.HasPrefix(link, "socket:"):
		return "socket"
	case strings.HasPrefix(link, "pipe:"):
		return "pipe"
	case strings.HasPrefix(link, "anon_inode:"):
		kind := strings.Trim(strings.TrimPrefix(link, "anon_inode:"), "[]")
		if kind == "" {
			return "anon_inode"
		}
		return kind
	}
	return "file"
}

func printFootprint(w io.Writer, rep FootprintReport) {
	mb := func(kb int) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }
	fmt.Fprintf(w, "the master with idle test workers; CPU over %s idle; then %d reloads, one after the other\n",
		time.Duration(rep.IdleMS)*time.Millisecond, rep.Reloads)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workers\tRssAnon\tVmRSS\tPSS with keeper\tfds\tidle CPU\tRssAnon after reloads\tfds after\treload median\tmax\tCPU per reload\t")
	for _, r := range rep.Results {
		after, fdsAfter, med, mx, per := "-", "-", "-", "-", "-"
		if r.Reloaded != nil {
			after, fdsAfter = mb(r.Reloaded.RssAnonKB), strconv.Itoa(r.Reloaded.FDs)
			med, mx = fmtMS(median(r.ReloadMS)), fmtMS(maxOf(r.ReloadMS))
			per = fmtMS(float64(r.ReloadTicks) * 10 / float64(len(r.ReloadMS)))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d ticks\t%s\t%s\t%s\t%s\t%s\t\n", r.Workers, mb(r.Idle.RssAnonKB), mb(r.Idle.VmRSSKB),
			mb(r.Idle.PssKB+r.Keeper.PssKB), r.Idle.FDs, r.IdleTicks, after, fdsAfter, med, mx, per)
	}
	tw.Flush()
	for _, r := range rep.Results {
		kinds := make([]string, 0, len(r.FDKinds))
		for k, n := range r.FDKinds {
			kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
		}
		slices.Sort(kinds)
		fmt.Fprintf(w, "  %d workers, fds: %s\n", r.Workers, strings.Join(kinds, ", "))
	}
}
