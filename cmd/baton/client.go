package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/pidfile"
	"github.com/baton-sh/baton/upgrader"
)

// masterAddress is how reload and status find a running master.
type masterAddress struct {
	pidfile, control string
}

func (a *masterAddress) flags(fs *flag.FlagSet) {
	fs.StringVar(&a.pidfile, "pidfile", "", "the master's --pidfile (its control socket is found next to it)")
	fs.StringVar(&a.control, "control", "", "the master's control socket `PATH`")
}

// controlPath is the control socket to use, or "" when only a pidfile was
// given and no control socket sits next to it.
func (a *masterAddress) controlPath() (string, error) {
	switch {
	case a.control != "":
		return a.control, nil
	case a.pidfile == "":
		return "", usagef("say which master: --pidfile PATH or --control PATH")
	}
	if path := control.DefaultPath(a.pidfile); exists(path) {
		return path, nil
	}
	return "", nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// reloadCmd asks a running master for a reload and, with --wait, reports
// how it ended: exit 0 once the new generation serves and the old one has
// drained, exit 1 with the reason when it failed.
func reloadCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	var addr masterAddress
	addr.flags(fs)
	wait := fs.Bool("wait", false, "wait until the reload has ended; exit 1 if it failed")
	timeout := fs.Duration("timeout", 0, "with --wait, give up (exit 1) after this long (default: no limit)")
	if err := parseFlags(fs, args); err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	if fs.NArg() > 0 {
		return fail(stderr, fs, usagef("reload takes no arguments"), exitUsage)
	}
	path, err := addr.controlPath()
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	if path == "" {
		if *wait {
			return fail(stderr, fs, fmt.Errorf("--wait needs the master's control socket, and there is none next to %s: start baton with --pidfile (or --control) and a writable directory", addr.pidfile), exitRuntime)
		}
		return hupMaster(addr.pidfile, stdout, stderr, fs)
	}
	resp, err := control.Ask(path, control.Request{Command: "reload", Wait: *wait}, *timeout)
	switch {
	case err != nil:
		return fail(stderr, fs, err, exitRuntime)
	case !resp.OK:
		return fail(stderr, fs, fmt.Errorf("reload failed: %s", resp.Error), exitRuntime)
	case *wait:
		fmt.Fprintf(stdout, "reloaded: generation %d serving after %s\n", resp.Generation,
			time.Duration(resp.TookSeconds*float64(time.Second)).Round(time.Millisecond))
	default:
		fmt.Fprintln(stdout, "reload requested")
	}
	return exitOK
}

// hupMaster is reload without a control socket: SIGHUP to the pidfile's PID.
func hupMaster(path string, stdout, stderr io.Writer, fs *flag.FlagSet) int {
	pid, err := pidfile.Read(path)
	if err != nil {
		return fail(stderr, fs, fmt.Errorf("cannot find the master: %w", err), exitRuntime)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fail(stderr, fs, fmt.Errorf("cannot signal master pid %d: %w", pid, err), exitRuntime)
	}
	fmt.Fprintf(stdout, "reload requested from master pid %d\n", pid)
	return exitOK
}

// statusCmd prints a running master's state, for humans or as JSON.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var addr masterAddress
	addr.flags(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := parseFlags(fs, args); err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	path, err := addr.controlPath()
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	if path == "" {
		return fail(stderr, fs, fmt.Errorf("no control socket next to %s: is baton running with this --pidfile?", addr.pidfile), exitRuntime)
	}
	resp, err := control.Ask(path, control.Request{Command: "status"}, 10*time.Second)
	if err == nil && !resp.OK {
		err = errors.New(resp.Error)
	}
	if err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(resp.Status)
		return exitOK
	}
	printStatus(stdout, resp.Status)
	return exitOK
}

func printStatus(w io.Writer, s *upgrader.Status) {
	fmt.Fprintf(w, "master       pid %d, up %s\n", s.PID, time.Since(s.Started).Round(time.Second))
	switch {
	case s.Stopping && s.StopPhase == "delay":
		fmt.Fprintln(w, "state        stopping: stop delay, still serving, not ready")
	case s.Stopping:
		fmt.Fprintln(w, "state        stopping: draining")
	case s.Generation == 0:
		fmt.Fprintln(w, "state        not serving")
	default:
		fmt.Fprintf(w, "serving      generation %d, pid %d, ready\n", s.Generation, s.WorkerPID)
	}
	for _, g := range s.Workers {
		line := fmt.Sprintf("worker       generation %d, pid %d, %s for %s", g.Generation, g.PID, g.State, time.Since(g.Started).Round(time.Second))
		if g.Status != "" {
			line += ": " + g.Status
		}
		fmt.Fprintln(w, line)
	}
	if r := s.LastReload; r != nil {
		result := "ok"
		if !r.OK {
			result = "failed: " + r.Error
		}
		took := time.Duration(r.TookSeconds * float64(time.Second)).Round(time.Millisecond)
		fmt.Fprintf(w, "last reload  %s at %s, took %s: %s\n", r.Kind, r.At.Format(time.RFC3339), took, result)
	}
	fmt.Fprintf(w, "restarts     %d\n", s.Restarts)
}
