package integration_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
)

// The README's recipes for servers people run, each with the real
// runtime: three reloads under POST load with 0 failed requests, a new
// worker PID at each, the master's PID unchanged, and a clean stop.

// recipeReady is how baton learns that a server which cannot send
// READY=1 is ready: one of its processes waits on the passed socket.
var recipeReady = []string{"--ready", "accepting"}

// recipeNeed finds a runtime's command, or skips the test saying which
// Debian package provides it.
func recipeNeed(t *testing.T, command, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(command)
	if err != nil {
		t.Skipf("%s is not installed (Debian package %s)", command, pkg)
	}
	return p
}

// recipeReloads reloads b n times under POST load: a client never resends
// a POST, so every request a draining server drops counts.
func recipeReloads(t *testing.T, b *harness.Baton, n int) int {
	t.Helper()
	return recipeReloadsAt(t, b, n, "http://"+b.Addr(t, "http")+"/")
}

// recipeReloadsAt is recipeReloads with the load sent to url.
func recipeReloadsAt(t *testing.T, b *harness.Baton, n int, url string) int {
	t.Helper()
	load, err := loadgen.Start(loadgen.Config{
		URL: url, NewConns: 4, KeepAlive: 4,
		PostBody: []byte("recipe"), MaxDuration: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop() })
	harness.Eventually(t, 10*time.Second, "load under way", func() bool { return load.Done() >= 200 })
	return reloadsWithLoad(t, b, n, load)
}

// recipeStart runs baton over command with flags, on a free loopback port
// unless flags say --listen.
func recipeStart(t *testing.T, flags []string, command ...string) *harness.Baton {
	t.Helper()
	args := flags
	if !slices.Contains(flags, "--listen") {
		args = append([]string{"--listen", "http=tcp://127.0.0.1:0"}, flags...)
	}
	return harness.Start(t, append(append(args, "--"), command...)...)
}

func TestRecipeNode(t *testing.T) {
	node := recipeNeed(t, "node", "nodejs")
	server := filepath.Join(harness.ModuleRoot(), "examples", "node", "server.js")
	t.Run("reloads", func(t *testing.T) {
		// README: baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node server.js
		b := recipeStart(t, recipeReady, node, server)
		stopCleanly(t, b, recipeReloads(t, b, 3))
	})

	// drain.js connection by connection: a keep-alive connection's next
	// request during the drain, and the first request of a connection
	// accepted before it, are answered by the old generation with
	// "Connection: close"; a connection that stays silent is closed.
	t.Run("drain", func(t *testing.T) {
		b := recipeStart(t, recipeReady, node, server)
		addr := b.Addr(t, "http")
		old := b.WorkerPID(t, 1)
		request := "POST / HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 2\r\n\r\nhi"
		answer := fmt.Sprintf("gen=1 pid=%d read=2\n", old)

		keepAlive, silent := ecoDial(t, addr), ecoDial(t, addr)
		for _, c := range []net.Conn{keepAlive, silent} {
			if resp := ecoRoundTrip(t, c, request); !strings.HasSuffix(resp, answer) || strings.Contains(resp, "Connection: close") {
				t.Fatalf("before the drain: %q", resp)
			}
		}
		fds := ecoOpenFDs(old)
		pending := ecoDial(t, addr)
		harness.Eventually(t, 10*time.Second, "generation 1 accepts the connection", func() bool { return ecoOpenFDs(old) > fds })

		b.Signal(t, syscall.SIGHUP)
		b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "draining" && e.Int("pid") == old })
		// Node closes its fd 3 when it stops accepting: it is draining.
		harness.Eventually(t, 10*time.Second, "generation 1 closes fd 3", func() bool {
			_, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", old))
			return err != nil
		})
		for name, c := range map[string]net.Conn{"keep-alive": keepAlive, "accepted before the drain": pending} {
			if resp := ecoRoundTrip(t, c, request); !strings.HasSuffix(resp, answer) || !strings.Contains(resp, "Connection: close\r\n") {
				t.Fatalf("%s connection during the drain: %q, want %q with Connection: close", name, resp, answer)
			}
		}
		silent.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := silent.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("silent keep-alive connection during the drain: read %d, %v; want it closed", n, err)
		}
		exit := b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("pid") == old })
		if exit.Str("how") != "exited with status 0" {
			t.Fatalf("drained worker: %v", exit)
		}
	})
}

func TestRecipeExpress(t *testing.T) {
	node := recipeNeed(t, "node", "nodejs")
	// Debian's node-express is in /usr/share/nodejs, where Debian's
	// Node.js looks and others may not.
	t.Setenv("NODE_PATH", "/usr/share/nodejs")
	if exec.Command(node, "-e", "require('express')").Run() != nil {
		t.Skip("express is not installed (Debian package node-express)")
	}
	// README: baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node server.js
	b := recipeStart(t, recipeReady, node, filepath.Join(harness.ModuleRoot(), "examples", "express", "server.js"))
	stopCleanly(t, b, recipeReloads(t, b, 3))
}

func TestRecipeUvicorn(t *testing.T) {
	python := ecoPython3(t)
	if exec.Command(python, "-c", "import uvicorn").Run() != nil {
		t.Skip("uvicorn is not installed (Debian package python3-uvicorn)")
	}
	t.Setenv("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in examples/
	// README: baton --listen http=tcp://127.0.0.1:8000 --ready accepting --dir examples/uvicorn -- python3 serve.py
	flags := append([]string{"--dir", filepath.Join(harness.ModuleRoot(), "examples", "uvicorn")}, recipeReady...)
	b := recipeStart(t, flags, python, "serve.py")
	stopCleanly(t, b, recipeReloads(t, b, 3))
}

func TestRecipePuma(t *testing.T) {
	puma := recipeNeed(t, "puma", "puma")
	if exec.Command("ruby", "-e", "require 'sd_notify'").Run() != nil {
		t.Skip("puma sends READY=1 through the sd_notify gem: Debian package ruby-sd-notify")
	}
	// Port 0 cannot be matched by puma's -b: pick a free one.
	_, port, _ := net.SplitHostPort(freePort(t))
	// README: baton --listen http=tcp://0.0.0.0:9292 --dir examples/puma -- puma -C puma.rb -b tcp://0.0.0.0:9292 config.ru
	// puma says READY=1 itself, through the sd_notify gem.
	// 0.0.0.0 is IPv4 only, as puma binds it itself, so puma finds its
	// activated socket by that address; the load stays on loopback.
	b := recipeStart(t, []string{"--listen", "http=tcp://0.0.0.0:" + port, "--ready", "notify", "--dir", filepath.Join(harness.ModuleRoot(), "examples", "puma")},
		puma, "-C", "puma.rb", "-b", "tcp://0.0.0.0:"+port, "config.ru")
	if out := b.Output(); !strings.Contains(out, "* Activated tcp://0.0.0.0:"+port) {
		t.Fatalf("puma did not take baton's socket:\n%s", out)
	}
	stopCleanly(t, b, recipeReloadsAt(t, b, 3, "http://127.0.0.1:"+port+"/"))
}

// The Go listener API under the same POST load: ServeHTTP's drain must
// lose nothing either.
func TestRecipeGoListener(t *testing.T) {
	b := recipeStart(t, nil, ecoBuildGoWorker(t))
	stopCleanly(t, b, recipeReloads(t, b, 5))
}

func TestRecipeShell(t *testing.T) {
	recipeNeed(t, "node", "nodejs") // the wrappers start examples/node
	dir := filepath.Join(harness.ModuleRoot(), "examples", "shell")

	// README: baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- examples/shell/exec.sh
	t.Run("exec", func(t *testing.T) {
		b := recipeStart(t, recipeReady, filepath.Join(dir, "exec.sh"))
		stopCleanly(t, b, recipeReloads(t, b, 3))
	})

	// README: baton --listen http=tcp://127.0.0.1:3000 -- examples/shell/notify.sh
	t.Run("trap and systemd-notify", func(t *testing.T) {
		recipeNeed(t, "systemd-notify", "systemd")
		b := recipeStart(t, nil, filepath.Join(dir, "notify.sh"))
		stopCleanly(t, b, recipeReloads(t, b, 3))
	})

	// The same as a user without CAP_SYS_ADMIN: systemd-notify cannot
	// pass READY=1 off as its parent's, so it comes from its own PID, a
	// child of the worker; --notify-access all takes it, main does not.
	t.Run("systemd-notify unprivileged", func(t *testing.T) {
		notify := recipeNeed(t, "systemd-notify", "systemd")
		env := recipeUnprivilegedNotify(t, notify)
		b := harness.StartWith(t, harness.Setup{Env: env},
			"--listen", "http=tcp://127.0.0.1:0", "--notify-access", "all", "--", filepath.Join(dir, "notify.sh"))
		b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") >= 1 })
		stopCleanly(t, b, recipeReloads(t, b, 3))

		main := harness.StartWith(t, harness.Setup{Env: env},
			"--listen", "http=tcp://127.0.0.1:0", "--notify-access", "main", "--ready-timeout", "3s", "--", filepath.Join(dir, "notify.sh"))
		if code := main.Wait(t, 30*time.Second); code != 3 {
			t.Fatalf("with --notify-access main, READY=1 from a child: baton exited %d, want 3 (first worker never ready)", code)
		}
	})

	// README: baton --listen http=tcp://127.0.0.1:3000 --ready accepting --drain-group -- examples/shell/plain.sh
	t.Run("no exec, drain group", func(t *testing.T) {
		// The shell dies of TERM at once; the server, in the same
		// process group, drains, and the generation ends with the group.
		b := recipeStart(t, append([]string{"--drain-group"}, recipeReady...), filepath.Join(dir, "plain.sh"))
		stopCleanly(t, b, recipeReloads(t, b, 3))
	})
}

// recipeUnprivilegedNotify returns the environment that puts first in
// PATH a systemd-notify that runs the real one without CAP_SYS_ADMIN, as
// any unprivileged user runs it: the kernel then refuses it a sender PID
// other than its own. When the tests do not run as root, the real one is
// already like that.
func recipeUnprivilegedNotify(t *testing.T, notify string) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	setpriv := recipeNeed(t, "setpriv", "util-linux")
	bin := t.TempDir()
	script := "#!/bin/sh\nexec " + setpriv + " --bounding-set -sys_admin --inh-caps -sys_admin " + notify + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "systemd-notify"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
}
