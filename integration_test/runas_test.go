package integration_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// factsServer is a Python server, standard library only, that answers
// GET / with what it runs as: its ids, groups, umask, parent, generation
// and environment, as JSON. GET /signal-master sends SIGTERM to its
// parent, the master, and answers with the outcome. It takes its socket
// from fd 3, says READY=1, and drains on SIGTERM.
const factsServer = `import errno, http.server, json, os, signal, socket, threading

def notify(state):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/signal-master":
            try:
                os.kill(os.getppid(), signal.SIGTERM)
                answer = {"signal": "sent"}
            except OSError as e:
                answer = {"signal": errno.errorcode[e.errno]}
        else:
            mask = os.umask(0)
            os.umask(mask)
            answer = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "umask": "%04o" % mask,
                      "pid": os.getpid(), "ppid": os.getppid(), "env": dict(os.environ)}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close waits for requests in flight

    def __init__(self, sock):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
server = Server(socket.socket(fileno=3))
serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
serving.start()
notify("READY=1")
signal.sigwait({signal.SIGTERM})
server.shutdown()
serving.join()
server.server_close()
`

// facts is what factsServer answers.
type facts struct {
	UID, GID int
	Groups   []int
	Umask    string
	PID      int
	PPID     int
	Env      map[string]string
	Signal   string
}

// appDir is a directory anyone may enter, as /srv/app is, holding
// server.py, the facts server.
func appDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "baton-app-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.py"), []byte(factsServer), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// askFacts asks the facts server at url.
func askFacts(t *testing.T, url string) facts {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	var f facts
	if err := json.Unmarshal(body, &f); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
	return f
}

// A root baton with --user nobody binds port 81, which nobody could
// not, and runs its Python server and its hooks as nobody, with
// --umask, before and after a reload. The server cannot signal the
// master, which stays root; a hook cannot either. Each worker's notify
// socket is nobody's alone.
func TestWorkersAndHooksRunAsUser(t *testing.T) {
	needRoot(t)
	const nobody = 65534
	dir := appDir(t)
	hook := `/bin/sh -c 'echo uid=$(id -u) gid=$(id -g) umask=$(umask) user=$USER; kill -TERM $BATON_MASTER_PID 2>/dev/null && echo signalled || echo refused'`
	b := harness.StartWith(t, harness.Setup{Baton: batonForAll(t)},
		"--listen", "http=tcp://127.0.0.1:81", "--user", "nobody", "--umask", "027", "--dir", dir,
		"--on-ready", hook, "--", ecoPython3(t), "server.py")
	runAs := b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "run_as" })
	if runAs.Int("uid") != nobody || runAs.Int("gid") != nobody || runAs.Str("umask") != "0027" {
		t.Errorf("the log says workers run as %v, want uid and gid %d, umask 0027", runAs, nobody)
	}
	const url = "http://127.0.0.1:81/"
	var pids []int
	for gen := 1; gen <= 2; gen++ {
		if gen == 2 {
			if e := b.Reload(t, 30*time.Second); e.Kind() != "reload_complete" {
				t.Fatalf("reload: %v", e)
			}
		}
		b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == gen })
		f := askFacts(t, url)
		pids = append(pids, f.PID)
		switch {
		case f.UID != nobody || f.GID != nobody || !slices.Equal(f.Groups, []int{nobody}):
			t.Errorf("generation %d runs as uid %d, gid %d, groups %v; want %d, %d, [%d]", gen, f.UID, f.GID, f.Groups, nobody, nobody, nobody)
		case procUID(t, f.PID) != nobody:
			t.Errorf("generation %d: /proc/%d says uid %d", gen, f.PID, procUID(t, f.PID))
		case f.Umask != "0027":
			t.Errorf("generation %d has umask %s, want 0027", gen, f.Umask)
		case f.Env["USER"] != "nobody" || f.Env["LOGNAME"] != "nobody" || f.Env["HOME"] == "/root" || f.Env["BATON_GENERATION"] != fmt.Sprint(gen):
			t.Errorf("generation %d: USER=%q LOGNAME=%q HOME=%q BATON_GENERATION=%q", gen, f.Env["USER"], f.Env["LOGNAME"], f.Env["HOME"], f.Env["BATON_GENERATION"])
		case f.PPID != b.PID():
			t.Errorf("generation %d's parent is %d, want the master %d", gen, f.PPID, b.PID())
		}
		checkNotifySocket(t, f.Env["NOTIFY_SOCKET"], nobody)

		if s := askFacts(t, url+"signal-master").Signal; s != "EPERM" {
			t.Errorf("generation %d signalling the master: %s, want EPERM", gen, s)
		}
		done := b.WaitFor(t, 20*time.Second, func(e harness.Event) bool {
			return (e.Kind() == "hook_done" || e.Kind() == "hook_failed") && e.Int("gen") == gen
		})
		if want := "uid=65534 gid=65534 umask=0027 user=nobody\nrefused"; done.Kind() != "hook_done" || done.Str("output") != want {
			t.Errorf("generation %d's on-ready hook: %s, output %q; want %q", gen, done.Kind(), done.Str("output"), want)
		}
	}
	if pids[0] == pids[1] {
		t.Errorf("the reload kept worker %d", pids[0])
	}
	if uid := procUID(t, b.PID()); uid != 0 {
		t.Errorf("the master runs as uid %d, want root", uid)
	}
	if n := len(b.Find(func(e harness.Event) bool { return e.Kind() == "stopping" })); n != 0 {
		t.Errorf("the master began to stop after its workers and hooks signalled it")
	}
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Errorf("baton exited %d after TERM, want 0", code)
	}
	t.Logf("workers %d and %d, and both on-ready hooks, ran as nobody with umask 0027; the master stayed root", pids[0], pids[1])
}

// checkNotifySocket: the worker's notify socket is uid's alone (mode
// 0600), in a directory of root's that uid's group may only pass through.
func checkNotifySocket(t *testing.T, path string, uid int) {
	t.Helper()
	if strings.HasPrefix(path, "@") {
		t.Logf("abstract notify socket %s: no permissions to check", path)
		return
	}
	for _, f := range []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{{filepath.Dir(path), 0, uid, os.ModeDir | 0o710}, {path, uid, uid, os.ModeSocket | 0o600}} {
		fi, err := os.Lstat(f.path)
		if err != nil {
			t.Errorf("notify socket: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != f.uid || int(st.Gid) != f.gid || fi.Mode() != f.mode {
			t.Errorf("%s: owner %d:%d, mode %v; want %d:%d, %v", f.path, st.Uid, st.Gid, fi.Mode(), f.uid, f.gid, f.mode)
		}
	}
}

// A deploy edits the --env-file and reloads: the new generation gets the
// new value (systemd's quotes taken off), while the old one kept its own.
// A malformed file fails that reload alone: reload --wait exits 1 naming
// the file and the line, and the serving generation keeps serving, and
// keeps its variables when its worker crashes and is restarted. A
// missing optional file adds nothing, --env adds its own, and a
// variable of baton's in the file is ignored with a warning.
func TestEnvFileReadAtEveryReload(t *testing.T) {
	dir := appDir(t)
	env := filepath.Join(t.TempDir(), "app.env")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(env, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# the app\nGREETING=v1\nLISTEN_FDS=7\n")
	missing := filepath.Join(t.TempDir(), "local.env")
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--env-file", env, "--env-file", "-"+missing,
		"--env", "OTHER=from-flag", "--env", "LISTEN_PID=1", "--dir", dir, "--", ecoPython3(t), "server.py")
	url := "http://" + b.Addr(t, "http") + "/"
	serves := func(gen int, greeting string) facts {
		t.Helper()
		f := askFacts(t, url)
		if f.Env["BATON_GENERATION"] != fmt.Sprint(gen) || f.Env["GREETING"] != greeting || f.Env["OTHER"] != "from-flag" || f.Env["LISTEN_FDS"] != "1" {
			t.Fatalf("served with BATON_GENERATION=%q GREETING=%q OTHER=%q LISTEN_FDS=%q; want generation %d, %s, from-flag, 1",
				f.Env["BATON_GENERATION"], f.Env["GREETING"], f.Env["OTHER"], f.Env["LISTEN_FDS"], gen, greeting)
		}
		return f
	}
	serves(1, "v1")

	write(`GREETING="v2"` + "\n")
	if code, stdout, stderr := b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload --wait after editing the env file: exit %d, %q %q", code, stdout, stderr)
	}
	v2 := serves(2, "v2")

	write("GREETING=v3\nexport SECRET=x\n")
	code, stdout, stderr := b.ReloadWait(t, 30*time.Second)
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "baton: reload failed: ") || !strings.Contains(stderr, env+`:2: "export SECRET" is not a variable name`) ||
		strings.Count(stderr, "\n") != 1 {
		t.Fatalf("reload --wait with a malformed env file: exit %d, stdout %q, stderr %q; want exit 1 and one line naming %s:2", code, stdout, stderr, env)
	}
	if f := serves(2, "v2"); f.PID != v2.PID {
		t.Fatalf("after the failed reload worker %d serves, want %d", f.PID, v2.PID)
	}

	// The file is still malformed: the restarted worker of generation 2
	// has generation 2's variables, not the file's.
	if err := syscall.Kill(v2.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool {
		return e.Kind() == "reload_complete" && e.Str("trigger") == "crash" && e.Int("gen") == 2
	})
	if f := serves(2, "v2"); f.PID == v2.PID {
		t.Fatalf("worker %d still serves after it was killed", f.PID)
	}

	write("GREETING=v4\n")
	if code, stdout, stderr := b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload --wait after mending the env file: exit %d, %q %q", code, stdout, stderr)
	}
	serves(4, "v4")
	// Read for generations 1, 2, 3 (failed) and 4; LISTEN_FDS was in
	// the first only. --env LISTEN_PID is refused once, at start.
	if n := len(b.Find(func(e harness.Event) bool { return e.Kind() == "env_ignored" })); n != 2 {
		t.Errorf("%d env_ignored warnings, want 2: --env LISTEN_PID, and the file's LISTEN_FDS for generation 1", n)
	}
}
