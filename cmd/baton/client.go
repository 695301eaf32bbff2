package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/pidfile"
	"github.com/baton-sh/baton/upgrader"
)

// masterAddress is how reload and status find a running master.
type masterAddress struct {
	pidfile, control string
}

func (a *masterAddress) flags(fs *flag.FlagSet) {
	fs.StringVar(&a.pidfile, "pidfile", "", "the master's --pidfile `PATH` (its control socket is found next to it)")
	fs.StringVar(&a.control, "control", "", "the master's control socket `PATH`")
}

// master is a running master as a client finds it.
type master struct {
	pid     int    // from the pidfile's lock holder; 0 with --control alone
	control string // its control socket, "" if it has none
}

// find locates the master. With --pidfile, only a live process holding
// the pidfile's lock counts: a stale pidfile, whose PID may now belong to
// anything, is an error, never a target.
func (a *masterAddress) find() (master, error) {
	switch {
	case a.control != "":
		return master{control: a.control}, nil
	case a.pidfile == "":
		return master{}, usagef("say which master: --pidfile PATH or --control PATH")
	}
	pid, err := pidfile.Holder(a.pidfile)
	var stale *pidfile.StaleError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return master{}, fmt.Errorf("no pidfile at %s: baton is not running with this --pidfile", a.pidfile)
	case errors.As(err, &stale):
		return master{}, err
	case errors.Is(err, fs.ErrPermission):
		return master{}, fmt.Errorf("no permission to read the pidfile %s: run as the user baton runs as, or pass --control with the control socket of a baton started with --control-group", a.pidfile)
	case err != nil:
		return master{}, fmt.Errorf("cannot find the master: %w", err)
	}
	m := master{pid: pid}
	if path := control.DefaultPath(a.pidfile); exists(path) {
		m.control = path
	}
	return m, nil
}

// findControlled locates a master that has a control socket; without one,
// the error says what to pass, and hint how else to reach it.
func (a *masterAddress) findControlled(hint string) (master, error) {
	m, err := a.find()
	if err == nil && m.control == "" {
		err = fmt.Errorf("master pid %d has no control socket next to %s: pass its --control%s", m.pid, a.pidfile, hint)
	}
	return m, err
}

// ask sends req over m's control socket and checks that the process
// answering is the one holding the pidfile.
func (m master) ask(req control.Request, timeout time.Duration) (control.Response, error) {
	resp, pid, err := control.Ask(m.control, req, timeout)
	if err == nil {
		err = m.answeredBy(pid)
	}
	return resp, err
}

// answeredBy checks that pid, the process that answered on m's control
// socket, is the one holding the pidfile.
func (m master) answeredBy(pid int) error {
	if m.pid != 0 && pid != 0 && pid != m.pid {
		return fmt.Errorf("the control socket %s belongs to pid %d, not to master pid %d that holds the pidfile: pass --control explicitly", m.control, pid, m.pid)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// waitFlagSet is the flags of a command that asks a running master for
// something and may wait for its outcome.
func waitFlagSet(name string, addr *masterAddress, waitHelp string, timeout time.Duration) (fs *flag.FlagSet, wait *bool, limit *time.Duration) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	addr.flags(fs)
	timeoutHelp := "with --wait, give up (exit 1) after this `DURATION` (default: no limit, but a master silent for 10s is given up on)"
	if timeout > 0 {
		timeoutHelp = "with --wait, give up (exit 1) after this `DURATION`"
	}
	return fs, fs.Bool("wait", false, waitHelp), fs.Duration("timeout", timeout, timeoutHelp)
}

func reloadFlagSet(addr *masterAddress) (fs *flag.FlagSet, wait *bool, timeout *time.Duration) {
	return waitFlagSet("reload", addr, "wait until the reload has ended; exit 1 if it failed", 0)
}

// reloadCmd asks a running master for a reload and, with --wait, reports
// how it ended: exit 0 once the new generation serves and the old one has
// drained, exit 1 with the reason when it failed.
func reloadCmd(args []string, stdout, stderr io.Writer) int {
	var addr masterAddress
	fs, wait, timeout := reloadFlagSet(&addr)
	err := parseFlags(fs, args)
	if code, ok := helped(stdout, fs, err); ok {
		return code
	}
	if err == nil && fs.NArg() > 0 {
		err = usagef("reload takes no arguments, got %q", fs.Arg(0))
	}
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	m, err := addr.find()
	if err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	if m.control == "" {
		if *wait {
			return fail(stderr, fs, fmt.Errorf("--wait needs the master's control socket, and there is none next to %s: start baton with --pidfile (or --control) and a writable directory", addr.pidfile), exitRuntime)
		}
		// Through a pidfd that the pidfile's lock proves is the master's: a
		// process that took a dead master's PID is never signalled.
		pid, err := pidfile.Signal(addr.pidfile, syscall.SIGHUP)
		if errors.Is(err, syscall.EPERM) {
			return fail(stderr, fs, fmt.Errorf("cannot signal master pid %d, which runs as another user: run as that user, or reload through a control socket opened to you with --control-group", m.pid), exitRuntime)
		} else if err != nil {
			return fail(stderr, fs, err, exitRuntime)
		}
		fmt.Fprintf(stdout, "reload requested from master pid %d\n", pid)
		return exitOK
	}
	resp, err := m.ask(control.Request{Command: "reload", Wait: *wait}, *timeout)
	switch {
	case err != nil:
		return fail(stderr, fs, err, exitRuntime)
	case !resp.OK && resp.Result == "rolled_back":
		return fail(stderr, fs, fmt.Errorf("reload failed and was rolled back: %s", printable(resp.Error)), exitRuntime)
	case !resp.OK:
		return fail(stderr, fs, fmt.Errorf("reload failed: %s", printable(resp.Error)), exitRuntime)
	case *wait:
		fmt.Fprintf(stdout, "reloaded: generation %d serving after %s\n", resp.Generation,
			time.Duration(resp.TookSeconds*float64(time.Second)).Round(time.Millisecond))
	default:
		fmt.Fprintln(stdout, "reload requested")
	}
	return exitOK
}

func statusFlagSet(addr *masterAddress) (fs *flag.FlagSet, asJSON *bool) {
	fs = flag.NewFlagSet("status", flag.ContinueOnError)
	addr.flags(fs)
	return fs, fs.Bool("json", false, "print the status as JSON")
}

// statusCmd prints a running master's state, for humans or as JSON.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	var addr masterAddress
	fs, asJSON := statusFlagSet(&addr)
	err := parseFlags(fs, args)
	if code, ok := helped(stdout, fs, err); ok {
		return code
	}
	if err == nil && fs.NArg() > 0 {
		err = usagef("status takes no arguments, got %q", fs.Arg(0))
	}
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	m, err := addr.findControlled("")
	if err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	resp, err := m.ask(control.Request{Command: "status"}, 10*time.Second)
	if err == nil && !resp.OK {
		err = errors.New(printable(resp.Error))
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
	if s.Version != "" {
		line := s.Version
		if s.Upgraded != nil {
			line += fmt.Sprintf(", upgraded in place %s ago", time.Since(*s.Upgraded).Round(time.Second))
		}
		fmt.Fprintf(w, "version      %s\n", line)
	}
	serving := 0
	for _, wk := range s.Workers {
		if wk.State == "serving" {
			serving++
		}
	}
	switch {
	case s.Stopping && s.StopPhase == "delay":
		fmt.Fprintln(w, "state        stopping: stop delay, still serving, not ready")
	case s.Stopping:
		fmt.Fprintln(w, "state        stopping: draining")
	case !s.Ready:
		fmt.Fprintln(w, "state        not serving")
	default:
		fmt.Fprintf(w, "serving      generation %d, %d of %d workers, ready\n", s.Generation, serving, s.WorkerCount)
	}
	for _, g := range s.Workers {
		state := g.State
		switch {
		case g.Probation:
			state = "ready, not yet serving"
		case g.Killed:
			state = "killed, not yet reaped"
		}
		line := fmt.Sprintf("worker %-5d generation %d, pid %d, %s for %s", g.Index, g.Generation, g.PID, state, time.Since(g.Started).Round(time.Second))
		if g.Restarts > 0 {
			line += fmt.Sprintf(", %d restarts", g.Restarts)
		}
		if g.Status != "" {
			line += ": " + printable(g.Status)
		}
		fmt.Fprintln(w, line)
	}
	if r := s.LastReload; r != nil {
		result := r.Result
		if !r.OK {
			result += ": " + printable(r.Error)
		}
		took := time.Duration(r.TookSeconds * float64(time.Second)).Round(time.Millisecond)
		fmt.Fprintf(w, "last reload  %s at %s, took %s: %s\n", r.Trigger, r.At.Format(time.RFC3339), took, result)
	}
	fmt.Fprintf(w, "restarts     %d\n", s.Restarts)
}

func scaleFlagSet(addr *masterAddress) (fs *flag.FlagSet, wait *bool, timeout *time.Duration) {
	return waitFlagSet("scale", addr, "wait until that many workers serve; exit 1 if they do not", 0)
}

// scaleCmd asks a running master for N workers and, with --wait, reports
// once N serve.
func scaleCmd(args []string, stdout, stderr io.Writer) int {
	var addr masterAddress
	fs, wait, timeout := scaleFlagSet(&addr)
	// The count comes first (baton scale 4 --pidfile P) or last. A
	// negative one is a count too, refused below, not an unknown flag.
	var count string
	if _, err := strconv.Atoi(args0(args)); len(args) > 0 && (!strings.HasPrefix(args[0], "-") || err == nil) {
		count, args = args[0], args[1:]
	}
	err := parseFlags(fs, args)
	if code, ok := helped(stdout, fs, err); ok {
		return code
	}
	if err == nil && count == "" && fs.NArg() == 1 {
		count = fs.Arg(0)
	} else if err == nil && fs.NArg() > 0 {
		err = usagef("scale takes one worker count, got %q", strings.Join(fs.Args(), " "))
	}
	n, cerr := strconv.Atoi(count)
	if err == nil && (cerr != nil || upgrader.CheckWorkers(n) != nil) {
		err = usagef("scale %q: want a worker count from 1 to %d, e.g. baton scale 4 --pidfile app.pid", count, upgrader.MaxWorkers)
	}
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	m, err := addr.findControlled(" (SIGTTIN and SIGTTOU add and remove one worker)")
	if err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	resp, err := m.ask(control.Request{Command: "scale", Workers: n, Wait: *wait}, *timeout)
	switch {
	case err != nil:
		return fail(stderr, fs, err, exitRuntime)
	case !resp.OK:
		return fail(stderr, fs, fmt.Errorf("scale failed: %s", printable(resp.Error)), exitRuntime)
	case *wait:
		fmt.Fprintf(stdout, "scaled: %d workers of generation %d serving\n", n, resp.Generation)
	default:
		fmt.Fprintf(stdout, "scale to %d workers requested\n", n)
	}
	return exitOK
}

// printable escapes what a worker could send to move the cursor, clear
// the screen or forge a line of status in a terminal (its STATUS= text
// reaches status verbatim): control characters and invalid UTF-8 become
// Go escapes such as \x1b and \n.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) < 0 && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == unicode.ReplacementChar && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r) || r == ' ':
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// args0 is the first of args, or "".
func args0(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}
