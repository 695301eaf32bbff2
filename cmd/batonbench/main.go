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
// scripts/bench.sh builds the programs and runs it. Its other measurements
// are subcommands, each described in its own file:
//
//	batonbench handoff    what baton adds before the old generation drains (handoff.go)
//	batonbench workers    a rolling reload of several workers, beside PM2 and uWSGI (workers.go)
//	batonbench footprint  the master's memory, fds and CPU with 1 to 32 workers (footprint.go)
//	batonbench shim       what the exec shim adds to a worker's start (shim.go)
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
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

var allModes = []string{"baton", "naive", "socket-holder", "tableflip"}

func main() {
	cmd, args := "", os.Args[1:]
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "hold":
		os.Exit(holdCmd(args[1:]))
	case "handoff":
		os.Exit(handoffCmd(args[1:], os.Stdout, os.Stderr))
	case "workers":
		os.Exit(workersCmd(args[1:], os.Stdout, os.Stderr))
	case "footprint":
		os.Exit(footprintCmd(args[1:], os.Stdout, os.Stderr))
	case "shim":
		os.Exit(shimCmd(args[1:], os.Stdout, os.Stderr))
	case "upgrade":
		os.Exit(upgradeBenchCmd(args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
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
		if !slices.Contains(allModes, m) {
			fmt.Fprintf(stderr, "batonbench: unknown mode %q (want some of %s)\n", m, strings.Join(allModes, ","))
			return 2
		}
		cfg.modes = append(cfg.modes, m)
	}
	if !binariesExist(stderr, cfg.baton, cfg.worker, cfg.tableflip) {
		return 1
	}
	// Servers that upgrade themselves leave their successor orphaned: be
	// its subreaper, so that it is ours to wait for, not init's.
	if err := setChildSubreaper(); err != nil {
		fmt.Fprintln(stderr, "batonbench: cannot become a subreaper:", err)
		return 1
	}

	rep := Report{Machine: machine(), Config: cfg, Command: "batonbench " + strings.Join(args, " ")}
	printMachine(stdout, rep.Machine)
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
	if *jsonOut != "" && !writeJSON(stderr, *jsonOut, rep) {
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

// binariesExist says on w which of paths is missing, and how to get it.
func binariesExist(w io.Writer, paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(w, "batonbench: %v (build it first: scripts/bench.sh does)\n", err)
			return false
		}
	}
	return true
}

// writeJSON writes v, indented, to path, and says on w why it could not.
func writeJSON(w io.Writer, path string, v any) bool {
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(w, "batonbench:", err)
		return false
	}
	return true
}
