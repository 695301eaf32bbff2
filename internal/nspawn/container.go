package nspawn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/proc"
)

// Options say how Boot makes a container.
type Options struct {
	// Rootfs is the root filesystem, used read-only: the container writes
	// to an overlay over it, discarded by Close.
	Rootfs string
	// Name is the machine name, unique on the host while it runs.
	Name string
	// Prepare, when set, runs before boot with the container's root
	// directory as the host sees it, to install files.
	Prepare func(root string) error
	// BootTimeout bounds the boot, from systemd-nspawn's start until
	// systemd says the system is running (default 60s).
	BootTimeout time.Duration
	// Console, when set, receives what systemd-nspawn and the container's
	// console print (the boot messages).
	Console io.Writer
}

// Container is a booted container: systemd as its PID 1, a private
// network with only its loopback.
type Container struct {
	// Name is the machine name.
	Name string
	// Root is the container's root directory as the host sees it; files
	// written there appear in the container.
	Root string
	// PID is the container's PID 1 (systemd) as the host numbers it.
	PID int
	// Booted is how long the boot took, from systemd-nspawn's start until
	// systemd reported the system running.
	Booted time.Duration

	work    string   // overlay layers and mount point
	cgroups []string // the cgroup directories made for it, one per hierarchy
	nspawn  *exec.Cmd
	exited  chan struct{}
	console consoleBuffer
	nsenter string
	netns   *os.File
	hostns  *os.File

	closeOnce sync.Once
	closeErr  error
}

// Boot starts systemd-nspawn --boot on an overlay of opts.Rootfs and
// returns once systemd inside has finished booting. The caller must Close
// the container, whatever happens next; when Boot fails it has already
// cleaned up.
func Boot(opts Options) (c *Container, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("nspawn: containers need root")
	}
	nspawnBin, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return nil, errors.New("nspawn: systemd-nspawn is not installed (Debian package systemd-container)")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, errors.New("nspawn: nsenter is not installed (Debian package util-linux)")
	}
	if opts.Name == "" || opts.Rootfs == "" {
		return nil, errors.New("nspawn: a container needs a name and a root filesystem")
	}
	if opts.BootTimeout <= 0 {
		opts.BootTimeout = 60 * time.Second
	}
	work, err := os.MkdirTemp("", "baton-nspawn-")
	if err != nil {
		return nil, fmt.Errorf("nspawn: %w", err)
	}
	c = &Container{Name: opts.Name, work: work, Root: filepath.Join(work, "root"), nsenter: nsenter, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				err = fmt.Errorf("%w; and cleaning up: %v", err, cerr)
			}
			c = nil
		}
	}()
	upper, ovlWork := filepath.Join(work, "upper"), filepath.Join(work, "work")
	for _, d := range []string{upper, ovlWork, c.Root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return c, fmt.Errorf("nspawn: %w", err)
		}
	}
	data := "lowerdir=" + opts.Rootfs + ",upperdir=" + upper + ",workdir=" + ovlWork
	if err := syscall.Mount("overlay", c.Root, "overlay", 0, data); err != nil {
		return c, fmt.Errorf("nspawn: mount an overlay of %s: %w", opts.Rootfs, err)
	}
	if opts.Prepare != nil {
		if err := opts.Prepare(c.Root); err != nil {
			return c, err
		}
	}
	if c.cgroups, err = makeCgroups("baton-nspawn-" + opts.Name); err != nil {
		return c, err
	}

	// A shell moves itself into the container's own cgroups and execs
	// systemd-nspawn, which with --keep-unit makes its "payload" and
	// "supervisor" cgroups below them instead of at the host's root.
	// Hybrid cgroup hosts need the unified hierarchy forced for the
	// container's systemd; with no systemd as the host's PID 1 (and no
	// bus) it is not registered as a machine.
	script := `n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ >"$1/cgroup.procs" || exit 125; shift; n=$((n-1)); done; exec "$@"`
	args := []string{"-c", script, "sh", strconv.Itoa(len(c.cgroups))}
	args = append(args, c.cgroups...)
	args = append(args, nspawnBin, "--boot", "--register=no", "--keep-unit", "--private-network",
		"--machine="+opts.Name, "--directory="+c.Root, "--console=read-only",
		"--link-journal=no", "--resolv-conf=off", "--timezone=off")
	c.nspawn = exec.Command("/bin/sh", args...)
	c.nspawn.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1"}
	var console io.Writer = &c.console
	if opts.Console != nil {
		console = io.MultiWriter(&c.console, opts.Console)
	}
	c.nspawn.Stdout, c.nspawn.Stderr = console, console
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := c.nspawn.Start(); err != nil {
		return c, fmt.Errorf("nspawn: start systemd-nspawn: %w", err)
	}
	go func() { c.nspawn.Wait(); close(c.exited) }()

	deadline := start.Add(opts.BootTimeout)
	if c.PID, err = c.findInit(deadline); err != nil {
		return c, err
	}
	if c.hostns, err = os.Open("/proc/self/ns/net"); err != nil {
		return c, fmt.Errorf("nspawn: this process's network namespace: %w", err)
	}
	if err := c.waitBooted(deadline); err != nil {
		return c, err
	}
	// Opened only once systemd runs as PID 1: a process found early may
	// not be in the container's network namespace yet, and dialling
	// through the host's would meet nothing on the container's loopback.
	netns := fmt.Sprintf("/proc/%d/ns/net", c.PID)
	host, _ := os.Readlink("/proc/self/ns/net")
	if ns, err := os.Readlink(netns); err != nil || ns == host {
		return c, fmt.Errorf("nspawn: the container's PID 1 is not in a network namespace of its own (%s, %v)", ns, err)
	}
	if c.netns, err = os.Open(netns); err != nil {
		return c, fmt.Errorf("nspawn: the container's network namespace: %w", err)
	}
	c.Booted = time.Since(start)
	return c, nil
}

// findInit waits for systemd-nspawn's child in a new PID namespace: the
// container's PID 1.
func (c *Container) findInit(deadline time.Time) (int, error) {
	self, _ := os.Readlink("/proc/self/ns/pid")
	parent := c.nspawn.Process.Pid
	for {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || ppidOf(pid) != parent {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ns != self {
				return pid, nil
			}
		}
		select {
		case <-c.exited:
			return 0, fmt.Errorf("nspawn: systemd-nspawn exited (%v) before the container started", c.nspawn.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return 0, errors.New("nspawn: no container process appeared in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ppidOf(pid int) int {
	s, err := proc.ReadStat(pid)
	if err != nil {
		return 0
	}
	return s.PPID
}

// waitBooted waits until systemd in the container says the system is
// running (or degraded: a unit failed, which the caller can look into).
func (c *Container) waitBooted(deadline time.Time) error {
	var last string
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		out, _ := c.Command(ctx, "systemctl", "is-system-running", "--wait").Output()
		cancel()
		last = strings.TrimSpace(string(out))
		if last == "running" || last == "degraded" {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("nspawn: systemd-nspawn exited (%v) during the boot", c.nspawn.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nspawn: the container did not finish booting in time (systemctl is-system-running: %q)", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Command runs args inside the container, in all its namespaces, in its
// root directory (also when this process is chrooted, where entering the
// mount namespace alone would not change the root), as root and with a
// plain environment. When ctx ends, the command is killed.
func (c *Container) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.nsenter, append([]string{"--target", strconv.Itoa(c.PID), "--all", "--root", "--wd", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		"TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	// nsenter forks to enter the PID namespace: kill its child too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// DialContext opens a connection from this process inside the
// container's network namespace (whose 127.0.0.1 is the container's own
// loopback): the socket is made by a thread that enters the namespace for
// the call and leaves it after.
func (c *Container) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(c.netns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("enter the container's network namespace: %w", err)}
			return
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		// A thread that cannot go back stays locked, and so ends with
		// this goroutine instead of serving others in the wrong namespace.
		if unix.Setns(int(c.hostns.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}

// Console is what systemd-nspawn and the container's console printed.
func (c *Container) Console() string { return c.console.String() }

// Close stops the container and removes everything Boot made: systemd is
// asked to power off (systemd-nspawn turns SIGTERM into that), and killed
// with all its processes if it has not within 20s; then the cgroups, the
// overlay mount and its directories go.
func (c *Container) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Container) close() error {
	var errs []error
	if c.nspawn != nil && c.nspawn.Process != nil {
		c.nspawn.Process.Signal(syscall.SIGTERM)
		if !waitClosed(c.exited, 20*time.Second) {
			errs = append(errs, errors.New("the container did not power off within 20s; killed"))
			if c.PID > 0 {
				syscall.Kill(c.PID, syscall.SIGKILL) // ends every process in its PID namespace
			}
			if !waitClosed(c.exited, 5*time.Second) {
				syscall.Kill(-c.nspawn.Process.Pid, syscall.SIGKILL)
				<-c.exited
			}
		}
	}
	for _, f := range []*os.File{c.netns, c.hostns} {
		if f != nil {
			f.Close()
		}
	}
	for _, cg := range c.cgroups {
		if err := removeCgroup(cg); err != nil {
			errs = append(errs, err)
		}
	}
	// systemd-nspawn's own leftovers on the host for this machine.
	for _, d := range []string{"/run/systemd/nspawn/propagate/", "/run/systemd/nspawn/unix-export/"} {
		if _, err := os.Lstat(d + c.Name); err == nil {
			if err := RemoveTree(d + c.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Its directories, if no other container uses them now.
	for _, d := range []string{"/run/systemd/nspawn/propagate", "/run/systemd/nspawn/unix-export", "/run/systemd/nspawn/locks", "/run/systemd/nspawn"} {
		os.Remove(d)
	}
	if c.work != "" {
		if err := RemoveTree(c.work); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("nspawn: closing %s: %w", c.Name, errors.Join(errs...))
	}
	return nil
}

func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// makeCgroups makes a cgroup called name below this process's own in the
// unified (v2) hierarchy and, on a hybrid host, in the v1 name=systemd
// one, and returns their directories.
func makeCgroups(name string) ([]string, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("nspawn: %w", err)
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("nspawn: %w", err)
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !(parts[1] == "" || parts[1] == "name=systemd") {
			continue
		}
		mount, root := cgroupMount(string(info), parts[1])
		if mount == "" {
			continue
		}
		rel := strings.TrimPrefix(parts[2], root)
		dir := filepath.Join(mount, rel, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return dirs, fmt.Errorf("nspawn: make the container's cgroup: %w", err)
		}
		dirs = append(dirs, dir)
	}
	if len(dirs) == 0 {
		return nil, errors.New("nspawn: no cgroup hierarchy for the container (neither cgroup2 nor name=systemd is mounted)")
	}
	return dirs, nil
}

// cgroupMount finds the mount point of the unified hierarchy (controllers
// "") or of the v1 hierarchy named by controllers, and the cgroup its root
// is.
func cgroupMount(mountinfo, controllers string) (mount, root string) {
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		match := controllers == "" && g[0] == "cgroup2" ||
			controllers != "" && g[0] == "cgroup" && slices.Contains(strings.Split(g[2], ","), controllers)
		if match {
			return unescapeMount(f[4]), unescapeMount(f[3])
		}
	}
	return "", ""
}

// removeCgroup removes dir and the cgroups below it, deepest first,
// killing what is still in them: only the container's processes can be.
func removeCgroup(dir string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if len(dirs) == 0 {
			return nil
		}
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		var last error
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = err
				procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				for _, f := range strings.Fields(string(procs)) {
					if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consoleBuffer keeps the last 256 KiB a container printed.
type consoleBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (w *consoleBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > 256<<10 {
		w.b = w.b[len(w.b)-256<<10:]
	}
	return len(p), nil
}

func (w *consoleBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}
