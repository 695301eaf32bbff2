package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/upgrader"
)

// batonbench upgrade measures baton's in-place upgrade (`baton upgrade`)
// under load:
//
//	batonbench upgrade [-upgrades 20] [-rate 1000] [-gap 300ms] [-other PATH] [-json FILE]
//
// baton is installed in a directory of its own, the way a package
// installs it, and runs the test worker under constant-rate POST load (a
// client never retries a POST, so a request the upgrade cut would count
// as failed). Every -gap the other build (-baton and -other in turn; the
// same binary when -other is not given) is renamed over the installed one
// and `baton upgrade --wait --pidfile …` runs. For each upgrade it
// records what the client prints ("serving again after"), the client's
// own run from start to exit, and from the master's log the check run of
// the new binary (upgrade_check → upgrading) and the exec (upgrading →
// upgraded, the new image's loop running). The requests whose time in
// flight overlaps an upgrade (from the client's start until the new image
// serves) are compared with those that ran wholly between upgrades.
//
// Then, with the load stopped, -upgrades more upgrades time the window
// in which the master ignores SIGHUP (and the other signals it may miss)
// across the exec: /proc/PID/status's SigIgn is read every 200µs or so
// from the client's start until the upgrade is done.

// UpgradeRun is one upgrade under load.
type UpgradeRun struct {
	// ServingAgainMS is what `baton upgrade --wait` printed: from its
	// request until the new image took over.
	ServingAgainMS float64 `json:"serving_again_ms"`
	// ClientMS is the client's run, from its start to its exit.
	ClientMS float64 `json:"client_ms"`
	// CheckMS is the check run of the new binary, ExecMS the hand-over,
	// exec and resumption, as the master's log times them.
	CheckMS float64 `json:"check_ms"`
	ExecMS  float64 `json:"exec_ms"`
}

// LatencyRow summarizes requests.
type LatencyRow struct {
	Requests int     `json:"requests"`
	Failed   int     `json:"failed"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
}

// UpgradeReport is the whole run, as written with -json.
type UpgradeReport struct {
	Machine  Machine      `json:"machine"`
	Command  string       `json:"command"`
	Versions []string     `json:"versions"`
	Rate     float64      `json:"rate_per_second"`
	Upgrades []UpgradeRun `json:"upgrades"`
	// Steady are the requests that ran wholly between upgrades, During
	// those in flight at some point of an upgrade; Failed counts all.
	Steady LatencyRow `json:"steady"`
	During LatencyRow `json:"during"`
	Failed int        `json:"failed"`
	// PIDStable says the master and its workers kept their PIDs.
	PIDStable bool `json:"pid_stable"`
	// SignalWindowMS is, for each upgrade without load, how long SIGHUP
	// was ignored; PollUS is the time from one look at /proc to the next
	// (median), the measure's resolution.
	SignalWindowMS []float64 `json:"signal_window_ms"`
	PollUS         float64   `json:"poll_us"`
}

func upgradeBenchCmd(args []string, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "batonbench upgrade:", err)
		return 1
	}
	dir := filepath.Dir(self)
	cfg := Config{stepTimeout: 30 * time.Second}
	fs := flag.NewFlagSet("batonbench upgrade", flag.ContinueOnError)
	fs.SetOutput(stderr)
	upgrades := fs.Int("upgrades", 20, "upgrades under load, and as many without load for the signal window")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "POST requests per second over all client loops")
	fs.IntVar(&cfg.NewConns, "new", 4, "client loops opening a new connection per request")
	fs.IntVar(&cfg.KeepAlive, "keepalive", 4, "client loops reusing a keep-alive connection")
	fs.DurationVar(&cfg.gap, "gap", 300*time.Millisecond, "steady load before the first upgrade and between upgrades")
	fs.StringVar(&cfg.baton, "baton", filepath.Join(dir, "baton"), "baton binary installed first")
	newBuild := fs.String("other", "", "baton binary installed at every other upgrade (default: -baton again)")
	fs.StringVar(&cfg.worker, "worker", filepath.Join(dir, "testworker"), "test worker binary")
	jsonOut := fs.String("json", "", "also write the results as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *upgrades < 1 || *upgrades > 1000 || cfg.Rate <= 0 || cfg.Rate > 20000 || cfg.NewConns+cfg.KeepAlive < 1 || cfg.gap <= 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "batonbench upgrade: want 1 to 1000 upgrades, a rate up to 20000/s, at least one client loop, a positive gap and no arguments")
		return 2
	}
	if *newBuild == "" {
		*newBuild = cfg.baton
	}
	if !binariesExist(stderr, cfg.baton, *newBuild, cfg.worker) {
		return 1
	}
	rep := UpgradeReport{Machine: machine(), Command: "batonbench upgrade " + strings.Join(args, " "), Rate: cfg.Rate}
	printMachine(stdout, rep.Machine)
	if err := benchUpgrades(cfg, *upgrades, [2]string{cfg.baton, *newBuild}, &rep, stderr); err != nil {
		fmt.Fprintln(stderr, "batonbench upgrade:", err)
		return 1
	}
	printUpgradeReport(stdout, rep)
	if *jsonOut != "" && !writeJSON(stderr, *jsonOut, rep) {
		return 1
	}
	if rep.Failed > 0 || !rep.PIDStable {
		return 1
	}
	return 0
}

// benchUpgrades runs the master from an installed copy of builds[0] and
// upgrades it n times under load, then n times without, into rep.
func benchUpgrades(cfg Config, n int, builds [2]string, rep *UpgradeReport, logw io.Writer) error {
	tmp, err := os.MkdirTemp("", "batonbench-upgrade-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	installed := filepath.Join(tmp, "bin", "baton")
	if err := install(builds[0], installed); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	pidfile := filepath.Join(tmp, "baton.pid")
	run := cfg
	run.baton = installed
	b, err := startBaton(run, logw, "--pidfile", pidfile, "--listen", "http=tcp://"+addr, "--", cfg.worker)
	if err != nil {
		return err
	}
	defer b.stop()
	if _, err := b.next(isReloadComplete); err != nil {
		return fmt.Errorf("first generation: %w", err)
	}
	ctl := control.DefaultPath(pidfile)
	before, err := askStatus(ctl)
	if err != nil {
		return err
	}
	rep.Versions = append(rep.Versions, before.Version)

	upgrade := func(i int) (UpgradeRun, time.Time, time.Time, error) {
		var r UpgradeRun
		if err := install(builds[(i+1)%2], installed); err != nil {
			return r, time.Time{}, time.Time{}, err
		}
		start := time.Now()
		out, err := exec.Command(installed, "upgrade", "--wait", "--pidfile", pidfile).CombinedOutput()
		r.ClientMS = ms(time.Since(start))
		if err != nil {
			return r, start, time.Time{}, fmt.Errorf("upgrade %d: %v: %s", i+1, err, strings.TrimSpace(string(out)))
		}
		m := servingAgain.FindSubmatch(out)
		if m == nil {
			return r, start, time.Time{}, fmt.Errorf("upgrade %d: baton upgrade --wait printed %q", i+1, out)
		}
		d, err := time.ParseDuration(string(m[1]))
		if err != nil {
			return r, start, time.Time{}, fmt.Errorf("upgrade %d: %q: %v", i+1, m[1], err)
		}
		r.ServingAgainMS = ms(d)
		check, err := b.next(func(e event) bool { return e.Event == "upgrade_check" })
		if err != nil {
			return r, start, time.Time{}, fmt.Errorf("upgrade %d: %w", i+1, err)
		}
		upgrading, err := b.next(func(e event) bool { return e.Event == "upgrading" })
		if err != nil {
			return r, start, time.Time{}, fmt.Errorf("upgrade %d: %w", i+1, err)
		}
		upgraded, err := b.next(func(e event) bool { return e.Event == "upgraded" })
		if err != nil {
			return r, start, time.Time{}, fmt.Errorf("upgrade %d: %w", i+1, err)
		}
		r.CheckMS, r.ExecMS = ms(upgrading.Time.Sub(check.Time)), ms(upgraded.Time.Sub(upgrading.Time))
		return r, start, upgraded.Time, nil
	}

	load, err := loadgen.Start(loadgen.Config{
		URL: "http://" + addr + "/", PostBody: []byte("upgrade"),
		NewConns: cfg.NewConns, KeepAlive: cfg.KeepAlive, Rate: cfg.Rate,
		MaxDuration: time.Duration(n+1)*(cfg.gap+5*time.Second) + 10*time.Second,
	})
	if err != nil {
		return err
	}
	time.Sleep(cfg.gap) // steady load before the first upgrade
	var spans [][2]time.Time
	for i := range n {
		if i > 0 {
			time.Sleep(cfg.gap)
		}
		r, from, to, err := upgrade(i)
		if err != nil {
			load.Stop()
			return err
		}
		rep.Upgrades = append(rep.Upgrades, r)
		spans = append(spans, [2]time.Time{from, to})
	}
	time.Sleep(cfg.gap) // steady load after the last upgrade
	samples := load.Stop()
	rep.Steady, rep.During, rep.Failed = splitBySpans(samples, spans)

	after, err := askStatus(ctl)
	if err != nil {
		return err
	}
	rep.Versions = append(rep.Versions, after.Version)
	rep.PIDStable = after.PID == before.PID && after.PID == b.cmd.Process.Pid && fmt.Sprint(workerPIDs(after)) == fmt.Sprint(workerPIDs(before))

	// The signal window, without load: SIGHUP ignored from the hand-over
	// until the new image asks for it.
	pid := b.cmd.Process.Pid
	var looks []time.Duration
	for i := n; i < 2*n; i++ {
		done := make(chan struct{})
		window := make(chan time.Duration, 1)
		go func() {
			var first, last time.Time
			for {
				select {
				case <-done:
					window <- last.Sub(first)
					return
				default:
				}
				t0 := time.Now()
				ignored, ok := hupIgnored(pid)
				t1 := time.Now()
				if ok && ignored {
					if first.IsZero() {
						first = t0
					}
					last = t1
				}
				// A look in a tight loop would take a core from the
				// master, whose exec and start it would slow down.
				// nanosleep, not time.Sleep: the runtime's timers may
				// round so short a pause up to a millisecond.
				pause := syscall.NsecToTimespec(int64(pollPause))
				syscall.Nanosleep(&pause, nil)
				if len(looks) < 1000 {
					looks = append(looks, time.Since(t0))
				}
			}
		}()
		_, _, _, err := upgrade(i)
		close(done)
		w := <-window
		if err != nil {
			return err
		}
		rep.SignalWindowMS = append(rep.SignalWindowMS, ms(w))
	}
	var us []float64
	for _, l := range looks {
		us = append(us, float64(l.Microseconds()))
	}
	rep.PollUS = median(us)
	return nil
}

// pollPause is the pause between two looks at the signal window.
const pollPause = 200 * time.Microsecond

var servingAgain = regexp.MustCompile(`serving again after (\S+)`)

// splitBySpans summarizes the samples in flight during one of spans
// apart from those that ran wholly between them; failed counts both.
func splitBySpans(samples loadgen.Samples, spans [][2]time.Time) (steady, during LatencyRow, failed int) {
	var in, out loadgen.Samples
	for _, s := range samples {
		end := s.Start.Add(s.Latency)
		overlaps := false
		for _, sp := range spans {
			if s.Start.Before(sp[1]) && end.After(sp[0]) {
				overlaps = true
				break
			}
		}
		if overlaps {
			in = append(in, s)
		} else {
			out = append(out, s)
		}
	}
	row := func(s loadgen.Samples) LatencyRow {
		sum := s.Summarize()
		return LatencyRow{Requests: sum.Requests, Failed: sum.Failed, P50MS: ms(sum.P50), P99MS: ms(sum.P99), MaxMS: ms(sum.Max)}
	}
	steady, during = row(out), row(in)
	return steady, during, steady.Failed + during.Failed
}

// hupIgnored reads whether pid ignores SIGHUP now (SigIgn in its status).
func hupIgnored(pid int) (ignored, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(l, "SigIgn:"); found {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&1 != 0, err == nil // bit 0: signal 1, SIGHUP
		}
	}
	return false, false
}

func askStatus(ctl string) (*upgrader.Status, error) {
	resp, _, err := control.Ask(ctl, control.Request{Command: "status"}, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if !resp.OK || resp.Status == nil {
		return nil, fmt.Errorf("status: %s", resp.Error)
	}
	return resp.Status, nil
}

func workerPIDs(s *upgrader.Status) []int {
	var pids []int
	for _, w := range s.Workers {
		pids = append(pids, w.PID)
	}
	return pids
}

// install puts a copy of src at path the way a package manager does:
// written beside it, then renamed over it.
func install(src, path string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func printUpgradeReport(w io.Writer, rep UpgradeReport) {
	var serving, client, check, execMS []float64
	for _, r := range rep.Upgrades {
		serving, client = append(serving, r.ServingAgainMS), append(client, r.ClientMS)
		check, execMS = append(check, r.CheckMS), append(execMS, r.ExecMS)
	}
	fmt.Fprintf(w, "%d upgrades under %.0f POST/s (%s): master and workers kept their PIDs: %v\n\n",
		len(rep.Upgrades), rep.Rate, strings.Join(rep.Versions, " … "), rep.PIDStable)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "upgrade\tmedian\tmax\t")
	for _, row := range []struct {
		name string
		v    []float64
	}{
		{"baton upgrade → serving again", serving},
		{"client, start to exit", client},
		{"check run of the new binary", check},
		{"hand-over, exec, resume", execMS},
		{"SIGHUP ignored (no load)", rep.SignalWindowMS},
	} {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", row.name, fmtMS(median(row.v)), fmtMS(maxOf(row.v)))
	}
	tw.Flush()
	fmt.Fprintf(w, "(the signal window is read from /proc every %.0fµs)\n\n", rep.PollUS)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests\tcount\tfailed\tp50\tp99\tmax\t")
	for _, row := range []struct {
		name string
		r    LatencyRow
	}{{"between upgrades", rep.Steady}, {"in flight during one", rep.During}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t\n", row.name, row.r.Requests, row.r.Failed, fmtMS(row.r.P50MS), fmtMS(row.r.P99MS), fmtMS(row.r.MaxMS))
	}
	tw.Flush()
}
