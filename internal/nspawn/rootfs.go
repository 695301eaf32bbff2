// Package nspawn boots a minimal Debian under systemd-nspawn, so that
// baton's integration tests run the shipped systemd units under a real
// systemd as PID 1: a root filesystem made once with debootstrap and
// cached, a throwaway overlay of it for each container, commands run
// inside with nsenter, and connections dialled in the container's private
// network namespace, whose only interface is its own loopback.
//
// It needs root, systemd-nspawn (Debian package systemd-container),
// debootstrap and nsenter, and works whether or not the host's PID 1 is
// systemd: the container is not registered with a host systemd, and
// lives in a cgroup of its own that Close removes.
package nspawn

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/envnames"
)

// Rootfs describes a Debian root filesystem made by debootstrap.
type Rootfs struct {
	// Suite is the Debian release, such as "trixie".
	Suite string
	// Packages are installed on top of the minbase variant; systemd and
	// dbus are needed to boot.
	Packages []string
	// Mirror is the Debian archive to install from; "" uses
	// DebianMirror().
	Mirror string
}

// recipe changes whenever the way a root filesystem is made changes, so
// that a cache made the old way is not used.
const recipe = "debootstrap --variant=minbase v1"

// Key names the cached root filesystem: the suite, the package list and
// the recipe, not the mirror (every mirror serves the same packages).
func (r Rootfs) Key() string {
	pkgs := slices.Clone(r.Packages)
	slices.Sort(pkgs)
	sum := sha256.Sum256([]byte(recipe + "\n" + r.Suite + "\n" + strings.Join(pkgs, ",")))
	return r.Suite + "-rootfs-" + hex.EncodeToString(sum[:6])
}

// Cached returns the root filesystem's directory in cacheDir, making it
// first with debootstrap if it is not there. It is built in a temporary
// directory and renamed into place only when complete, under a lock, so
// that an interrupted build leaves nothing a later run would use (the next
// build removes its remains). progress receives debootstrap's output.
func (r Rootfs) Cached(cacheDir string, progress io.Writer) (dir string, built bool, err error) {
	if r.Suite == "" || len(r.Packages) == 0 {
		return "", false, errors.New("nspawn: a root filesystem needs a suite and packages")
	}
	dir = filepath.Join(cacheDir, r.Key())
	if complete(dir) {
		return dir, false, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", false, fmt.Errorf("nspawn: cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", false, fmt.Errorf("nspawn: cache lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("nspawn: cache lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if complete(dir) { // another process built it while this one waited
		return dir, false, nil
	}
	// What an interrupted build left behind; nothing else builds now.
	stale, _ := filepath.Glob(filepath.Join(cacheDir, ".build-*"))
	for _, s := range stale {
		if err := RemoveTree(s); err != nil {
			return "", false, fmt.Errorf("nspawn: removing an interrupted build: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-"+r.Suite+"-")
	if err != nil {
		return "", false, fmt.Errorf("nspawn: cache: %w", err)
	}
	defer RemoveTree(tmp)
	target := filepath.Join(tmp, "rootfs")
	if err := r.debootstrap(target, progress); err != nil {
		return "", false, err
	}
	if err := os.WriteFile(filepath.Join(target, stampFile), []byte(r.Key()+"\n"), 0o644); err != nil {
		return "", false, fmt.Errorf("nspawn: cache: %w", err)
	}
	if err := os.Rename(target, dir); err != nil {
		return "", false, fmt.Errorf("nspawn: cache: %w", err)
	}
	return dir, true, nil
}

// stampFile, in a root filesystem, says its build completed.
const stampFile = ".baton-rootfs-complete"

func complete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, stampFile))
	return err == nil
}

func (r Rootfs) debootstrap(target string, progress io.Writer) error {
	bin, err := exec.LookPath("debootstrap")
	if err != nil {
		return errors.New("nspawn: debootstrap is not installed (Debian package debootstrap)")
	}
	mirror := r.Mirror
	if mirror == "" {
		mirror = DebianMirror()
	}
	if progress == nil {
		progress = io.Discard
	}
	var tail tailBuffer
	cmd := exec.Command(bin, "--variant=minbase", "--include="+strings.Join(r.Packages, ","), r.Suite, target, mirror)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout = io.MultiWriter(progress, &tail)
	cmd.Stderr = cmd.Stdout
	// If the test dies, nothing is left writing into the directory the
	// next build removes, nor mounted on the host: debootstrap is killed
	// with it, as PID 1 of its own PID namespace (so every process it
	// started dies too), and the /proc and /sys it mounts in the target
	// are in a mount namespace of its own.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig:    syscall.SIGKILL,
		Cloneflags:   syscall.CLONE_NEWPID,
		Unshareflags: syscall.CLONE_NEWNS,
	}
	if err := cmd.Run(); err != nil {
		why := tail.last()
		// "See …/debootstrap.log for details": the reason is in the log.
		if b, rerr := os.ReadFile(filepath.Join(target, "debootstrap", "debootstrap.log")); rerr == nil {
			var log tailBuffer
			log.Write(b)
			why += " (its log ends: " + log.last() + ")"
		}
		return fmt.Errorf("nspawn: debootstrap %s from %s: %v: %s", r.Suite, mirror, err, why)
	}
	return nil
}

// DebianMirror is the Debian archive this machine's apt uses (the first
// URI ending in /debian in /etc/apt/sources.list and sources.list.d), or
// http://deb.debian.org/debian; $BATON_TEST_DEBIAN_MIRROR overrides both.
func DebianMirror() string {
	if m := os.Getenv(envnames.TestDebianMirror); m != "" {
		return m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		if m := mirrorIn(f); m != "" {
			return m
		}
	}
	return "http://deb.debian.org/debian"
}

func mirrorIn(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var uris []string
		switch {
		case strings.HasPrefix(line, "URIs:"): // deb822 .sources
			uris = strings.Fields(strings.TrimPrefix(line, "URIs:"))
		case strings.HasPrefix(line, "deb "): // one-line format
			for _, f := range strings.Fields(line)[1:] {
				if !strings.HasPrefix(f, "[") {
					uris = []string{f}
					break
				}
			}
		}
		for _, u := range uris {
			u = strings.TrimSuffix(u, "/")
			if (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) && strings.HasSuffix(u, "/debian") {
				return u
			}
		}
	}
	return ""
}

// RemoveTree removes dir and everything in it, after unmounting whatever
// is mounted below it (an interrupted debootstrap leaves /proc and /sys
// mounted in its target): it never deletes through a mount point.
func RemoveTree(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := unmountBelow(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// unmountBelow unmounts every mount at or below dir, deepest first, and
// fails if one remains.
func unmountBelow(dir string) error {
	for attempt := 0; ; attempt++ {
		mounts := mountsBelow(dir)
		if len(mounts) == 0 {
			return nil
		}
		if attempt == 20 {
			return fmt.Errorf("still mounted below %s: %s", dir, strings.Join(mounts, ", "))
		}
		for _, m := range mounts {
			if err := syscall.Unmount(m, 0); err != nil {
				syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mountsBelow lists the mount points at or below dir, deepest first.
func mountsBelow(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return slices.Compact(out)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tailBuffer keeps the end of a command's output for an error message.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

// last is the last non-empty line written.
func (t *tailBuffer) last() string {
	lines := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
