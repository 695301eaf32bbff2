package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/admin"
	"github.com/baton-sh/baton/internal/logging"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/pidfile"
	"github.com/baton-sh/baton/upgrader"
)

// carried is what cmd/baton hands its new image in an in-place upgrade,
// beside the engine's state (upgrader.HandOver.Data): the sockets by
// name, the control socket, and the counters of /metrics. The descriptors
// themselves are in HandOver.Files under the names below.
type carried struct {
	Sockets  []sockets.Carried `json:"sockets"`
	Control  *sockets.Carried  `json:"control,omitempty"`
	Counters map[string]uint64 `json:"counters,omitempty"`
}

// Names of the caller's descriptors in HandOver.Files.
const (
	filePidfile = "pidfile"
	fileAdmin   = "admin"
)

// selfPath is the binary an in-place upgrade executes: the one baton was
// started from, as it was named (a symbolic link stays one, so a package
// manager's or a deploy's new binary is what runs), made absolute now,
// before anything can change the working directory.
func selfPath() string {
	name := os.Args[0]
	if filepath.Base(name) == name {
		if p, err := exec.LookPath(name); err == nil {
			name = p
		}
	}
	if abs, err := filepath.Abs(name); err == nil {
		if _, err := os.Stat(abs); err == nil {
			return abs
		}
	}
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "/proc/self/exe"
}

// master is what masterCmd holds that an upgrade hands over.
type masterParts struct {
	pidfile *pidfile.File
	sockets []*sockets.Socket
	control *control.Server
	admin   *admin.Server
	metrics *admin.Metrics
	log     *logging.Log
	signals *dispatcher
	// kept holds the duplicates made for the exec until it happens, or
	// until it failed.
	kept []int
}

// upgradeOptions makes the master upgradable in place.
func (p *masterParts) upgradeOptions(path string) *upgrader.UpgradeOptions {
	return &upgrader.UpgradeOptions{
		Path: path, Args: os.Args, Env: os.Environ(),
		Quiesce: func() func() {
			undo := p.signals.quiesce()
			return func() { p.dropKept(); undo() }
		},
		BeforeExec: func() { p.log.Flush(); p.signals.release() },
		Carry:      p.carry,
	}
}

// carry describes what masterCmd holds for the new image.
func (p *masterParts) carry() (map[string]int, json.RawMessage, error) {
	files := map[string]int{}
	var c carried
	if p.pidfile != nil {
		files[filePidfile] = p.pidfile.Carry()
	}
	for _, s := range p.sockets {
		cs := s.Carry()
		c.Sockets = append(c.Sockets, cs)
		files["socket:"+cs.Name] = cs.FD
	}
	if p.control != nil {
		cs := p.control.Carry()
		c.Control = &cs
		files["control"] = cs.FD
	}
	if p.admin != nil {
		fd, err := p.admin.Carry()
		if err != nil {
			return nil, nil, fmt.Errorf("admin endpoint: %w", err)
		}
		p.kept = append(p.kept, fd)
		files[fileAdmin] = fd
	}
	c.Counters = p.metrics.Carry()
	data, err := json.Marshal(c)
	return files, data, err
}

// dropKept closes the duplicates made for an exec that failed.
func (p *masterParts) dropKept() {
	for _, fd := range p.kept {
		syscall.Close(fd)
	}
	p.kept = nil
}

// takeCarried reads what the old image's cmd/baton handed over.
func takeCarried(ho *upgrader.HandOver) (carried, error) {
	var c carried
	if len(ho.Data) == 0 {
		return c, errors.New("the old image handed over no sockets")
	}
	err := json.Unmarshal(ho.Data, &c)
	return c, err
}

// adoptSockets takes back the --listen sockets, by name, in the order of
// the flags.
func adoptSockets(listen []string, c carried) ([]*sockets.Socket, error) {
	byName := map[string]sockets.Carried{}
	for _, s := range c.Sockets {
		byName[s.Name] = s
	}
	var out []*sockets.Socket
	for i, raw := range listen {
		spec, _ := sockets.ParseSpec(raw, i) // checked in parse
		cs, ok := byName[spec.Name]
		if !ok {
			return nil, fmt.Errorf("--listen %s: the old image handed over no socket called %q", raw, spec.Name)
		}
		s, err := sockets.Adopt(spec, cs)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// upgradeCheck is the check run of an in-place upgrade (envnames.
// UpgradeCheck set): this binary, started with the master's own
// arguments and the state it would be handed on stdin, says whether it
// can take over. It takes the flags, resolves what they name as the new
// image's start would (env files, users, groups), reads the state and
// checks its version and its sockets, prints its version, and exits 0;
// anything else
// is one line on stderr and a non-zero exit.
func upgradeCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var f masterFlags
	fs := masterFlagSet(&f)
	if _, err := f.parse(fs, args); err != nil {
		return fail(stderr, fs, fmt.Errorf("this build does not take the master's flags: %w", err), exitUsage)
	}
	// What the new image resolves again as it starts (--env-file, --user,
	// --control-group): failing there, after the exec, would end the
	// master and its workers, so it fails here, before.
	if _, err := f.privileges.resolve(); err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	raw, err := io.ReadAll(io.LimitReader(stdin, 64<<20))
	if err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	ho, err := upgrader.ReadHandOver(raw)
	if err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	if len(f.listen) > 0 {
		c, err := takeCarried(ho)
		if err == nil {
			names := map[string]bool{}
			for _, s := range c.Sockets {
				names[s.Name] = true
			}
			for i, l := range f.listen {
				if spec, _ := sockets.ParseSpec(l, i); !names[spec.Name] {
					err = fmt.Errorf("--listen %s: the master holds no socket called %q", l, spec.Name)
					break
				}
			}
		}
		// Describing the sockets comes with the hand-over proper; the
		// check's state has none when the master holds none yet.
		if err != nil && len(ho.Data) > 0 {
			return fail(stderr, fs, err, exitRuntime)
		}
	}
	fmt.Fprintln(stdout, upgrader.CheckOK+versionString())
	return exitOK
}

func upgradeFlagSet(addr *masterAddress) (fs *flag.FlagSet, wait *bool, timeout *time.Duration) {
	return waitFlagSet("upgrade", addr, "wait until the new image serves control requests; exit 1 if the upgrade was refused or did not happen", 30*time.Second)
}

// upgradeCmd asks a running master to upgrade itself in place and, with
// --wait, waits until its new image answers.
func upgradeCmd(args []string, stdout, stderr io.Writer) int {
	var addr masterAddress
	fs, wait, timeout := upgradeFlagSet(&addr)
	err := parseFlags(fs, args)
	if code, ok := helped(stdout, fs, err); ok {
		return code
	}
	if err == nil && fs.NArg() > 0 {
		err = usagef("upgrade takes no arguments, got %q", fs.Arg(0))
	}
	if err == nil && *timeout <= 0 {
		err = usagef("--timeout %s: want a positive duration", *timeout)
	}
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	m, err := addr.findControlled("")
	if err != nil {
		return fail(stderr, fs, err, exitRuntime)
	}
	asked := time.Now()
	resp, pid, err := control.AskUpgrade(m.control, *timeout)
	if err == nil {
		err = m.answeredBy(pid)
	}
	switch {
	case err != nil:
		return fail(stderr, fs, err, exitRuntime)
	case !resp.OK:
		return fail(stderr, fs, fmt.Errorf("upgrade refused: %s", printable(resp.Error)), exitRuntime)
	case !*wait:
		fmt.Fprintf(stdout, "upgrading: %s → %s\n", resp.From, resp.To)
		return exitOK
	}
	// The master has executed its new image (the connection ended). The
	// control socket stayed open across the exec: this request waits in
	// it until the new image serves.
	st, err := m.ask(control.Request{Command: "status"}, time.Until(asked.Add(*timeout)))
	switch {
	case err != nil:
		return fail(stderr, fs, fmt.Errorf("after the upgrade: %w", err), exitRuntime)
	case !st.OK || st.Status == nil || st.Status.Upgraded == nil || !st.Status.Upgraded.After(asked):
		return fail(stderr, fs, fmt.Errorf("the master did not come back as %s: see its log", resp.To), exitRuntime)
	}
	fmt.Fprintf(stdout, "upgraded: %s → %s, master pid %d, serving again after %s\n", resp.From, st.Status.Version,
		st.Status.PID, st.Status.Upgraded.Sub(asked).Round(time.Millisecond))
	return exitOK
}
