package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
)

// The recipes of docs/servers.md, each with the real server from Debian:
// three reloads under POST load on new and keep-alive connections, each
// with a slow request in flight on the generation being replaced. The
// drain signal, the readiness mode and the keep-alive setting each recipe
// names are what make that 0 failed with the slow request answered: a
// load of fast requests alone cannot tell a graceful drain from a brutal
// one, since a drain cuts only what is in flight.

// serverSlow is how long the request in flight at each reload takes.
const serverSlow = 1500 * time.Millisecond

// serverDrains reloads b n times under POST load on url (new and
// keep-alive connections), each time with the slow request slow puts in
// flight, then stops b: every POST answered, the slow ones too, a new
// worker at each reload, baton's PID unchanged, exit 0.
func serverDrains(t *testing.T, b *harness.Baton, n int, url string, slow func(t *testing.T) <-chan harness.Answer) {
	t.Helper()
	if hints := b.Find(isServerHint); len(hints) > 0 {
		t.Fatalf("baton warns of the recipe itself: %v", hints)
	}
	load, err := loadgen.Start(loadgen.Config{
		URL: url, NewConns: 4, KeepAlive: 4,
		PostBody: []byte("recipe"), MaxDuration: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop() })
	harness.Eventually(t, 10*time.Second, "load under way", func() bool { return load.Done() >= 200 })
	stopCleanly(t, b, reloadsInFlight(t, b, n, load, slow))
}

// nonBlocking reports whether /proc/PID/fdinfo/FD's text shows O_NONBLOCK.
func nonBlocking(fdinfo string) bool {
	for _, line := range strings.Split(fdinfo, "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&syscall.O_NONBLOCK != 0
		}
	}
	return false
}

func isServerHint(e harness.Event) bool { return e.Kind() == "server_hint" }

// serverSlowApp is the slow request of an app that says "slow request
// started" on its output when it begins one.
func serverSlowApp(b *harness.Baton, url string) func(t *testing.T) <-chan harness.Answer {
	return func(t *testing.T) <-chan harness.Answer { return b.InFlight(t, url, serverSlow) }
}

// upstream is the application behind a proxy recipe (nginx, HAProxy),
// run by the test: a POST is answered with the PID the proxy put in
// X-Proxy-Pid, so the load sees which generation carried it, and
// /slow?d=D after D.
type upstream struct {
	addr    string
	started atomic.Int64
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/slow" {
			d, _ := time.ParseDuration(r.URL.Query().Get("d"))
			u.started.Add(1)
			time.Sleep(d)
			fmt.Fprintf(w, "slow done after %s via pid=%s\n", d, r.Header.Get("X-Proxy-Pid"))
			return
		}
		fmt.Fprintf(w, "upstream read=%d via pid=%s\n", n, r.Header.Get("X-Proxy-Pid"))
	}))
	t.Cleanup(srv.Close)
	u.addr = strings.TrimPrefix(srv.URL, "http://")
	return u
}

// slow is a request to url's /slow through the proxy, once the upstream
// has begun it.
func (u *upstream) slow(url string) func(t *testing.T) <-chan harness.Answer {
	return func(t *testing.T) <-chan harness.Answer {
		t.Helper()
		before := u.started.Load()
		answer := harness.GetInBackground(url + "/slow?d=" + serverSlow.String())
		harness.Eventually(t, 10*time.Second, "a slow request in flight", func() bool { return u.started.Load() > before })
		return answer
	}
}

// serverExample copies examples/DIR into a directory of the test, with
// each of replace's old strings (an address in a configuration file)
// replaced by the new one, and returns that directory.
func serverExample(t *testing.T, dir string, replace ...string) string {
	t.Helper()
	src := filepath.Join(harness.ModuleRoot(), "examples", dir)
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer(replace...)
	for _, e := range ents {
		if e.IsDir() {
			continue // __pycache__, say
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := e.Info()
		if err := os.WriteFile(filepath.Join(dst, e.Name()), []byte(r.Replace(string(b))), info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestRecipeUWSGI(t *testing.T) {
	uwsgi := recipeNeed(t, "uwsgi", "uwsgi")
	if _, err := os.Stat("/usr/lib/uwsgi/plugins/python3_plugin.so"); err != nil {
		t.Skip("uWSGI's Python 3 plugin is not installed (Debian package uwsgi-plugin-python3)")
	}
	t.Setenv("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in examples/
	// docs/servers.md:
	//   baton --listen http=tcp://127.0.0.1:8000 --drain-signal HUP --dir examples/uwsgi -- \
	//       uwsgi --plugin python3 --protocol http --add-header 'Connection: close' \
	//             --wsgi-file app.py --master --processes 2 --exit-on-reload
	b := recipeStart(t, []string{"--drain-signal", "HUP", "--dir", filepath.Join(harness.ModuleRoot(), "examples", "uwsgi")},
		uwsgi, "--plugin", "python3", "--protocol", "http", "--add-header", "Connection: close",
		"--wsgi-file", "app.py", "--master", "--processes", "2", "--exit-on-reload")
	addr := b.Addr(t, "http")
	if out := b.Output(); !strings.Contains(out, "uwsgi socket 0 attached to INET address "+addr+" fd 3") || strings.Contains(out, "uwsgi socket 1 ") {
		t.Fatalf("uWSGI did not take baton's socket as its one socket:\n%s", out)
	}
	url := "http://" + addr
	serverDrains(t, b, 3, url+"/", serverSlowApp(b, url))
}

func TestRecipeUnicorn(t *testing.T) {
	unicorn := recipeNeed(t, "unicorn", "unicorn")
	// docs/servers.md:
	//   baton --listen http=tcp://127.0.0.1:8080 --ready accepting --drain-signal QUIT --dir examples/unicorn -- \
	//       unicorn -c unicorn.rb config.ru
	b := recipeStart(t, []string{"--ready", "accepting", "--drain-signal", "QUIT", "--dir", filepath.Join(harness.ModuleRoot(), "examples", "unicorn")},
		unicorn, "-c", "unicorn.rb", "config.ru")
	addr := b.Addr(t, "http")
	if out := b.Output(); !strings.Contains(out, "inherited addr="+addr+" fd=3") {
		t.Fatalf("unicorn did not take baton's socket:\n%s", out)
	}
	url := "http://" + addr
	serverDrains(t, b, 3, url+"/", serverSlowApp(b, url))
}

func TestRecipeNginx(t *testing.T) {
	nginx := recipeNeed(t, "nginx", "nginx")
	app := startUpstream(t)
	// nginx takes the socket whose address its listen directive names.
	addr := freePort(t)
	dir := serverExample(t, "nginx", "127.0.0.1:8080", addr, "127.0.0.1:8000", app.addr)
	// docs/servers.md:
	//   baton --listen http=tcp://127.0.0.1:8080 --ready accepting --drain-signal QUIT -- \
	//       examples/nginx/nonblock env 'NGINX=3;' nginx -p examples/nginx/ -c nginx.conf -e stderr
	command := []string{filepath.Join(dir, "nonblock"), "env", "NGINX=3;", nginx, "-p", dir + "/", "-c", "nginx.conf", "-e", "stderr"}
	t.Run("recipe", func(t *testing.T) {
		b := recipeStart(t, []string{"--listen", "http=tcp://" + addr, "--ready", "accepting", "--drain-signal", "QUIT"}, command...)
		if out := b.Output(); !strings.Contains(out, `using inherited sockets from "3;"`) {
			t.Fatalf("nginx did not take baton's socket:\n%s", out)
		}
		if fdinfo, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", b.WorkerPID(t, 1))); !nonBlocking(string(fdinfo)) {
			t.Fatalf("nginx's fd 3 is blocking: its workers would block in accept(2)\n%s", fdinfo)
		}
		url := "http://" + addr
		serverDrains(t, b, 3, url+"/", app.slow(url))
	})

	// TERM, the default drain signal, is nginx's fast stop: baton says so
	// at start, and what to pass instead.
	t.Run("TERM", func(t *testing.T) {
		b := recipeStart(t, []string{"--listen", "http=tcp://" + addr, "--ready", "accepting"}, command...)
		hint := b.WaitFor(t, 5*time.Second, isServerHint)
		if !strings.Contains(hint.Msg(), "--drain-signal QUIT") {
			t.Fatalf("the warning does not say what to pass: %v", hint)
		}
		stopCleanly(t, b, b.WorkerPID(t, 1))
	})
}

func TestRecipeHAProxy(t *testing.T) {
	haproxy := recipeNeed(t, "haproxy", "haproxy")
	app := startUpstream(t)
	dir := serverExample(t, "haproxy", "127.0.0.1:8000", app.addr)
	// docs/servers.md:
	//   baton --listen http=tcp://127.0.0.1:8080 --drain-signal USR1 -- \
	//       haproxy -Ws -f examples/haproxy/haproxy.cfg
	b := recipeStart(t, []string{"--drain-signal", "USR1"}, haproxy, "-Ws", "-f", filepath.Join(dir, "haproxy.cfg"))
	url := "http://" + b.Addr(t, "http")
	serverDrains(t, b, 3, url+"/", app.slow(url))
}

func TestRecipeAiohttp(t *testing.T) {
	python := ecoPython3(t)
	if exec.Command(python, "-c", "import aiohttp").Run() != nil {
		t.Skip("aiohttp is not installed (Debian package python3-aiohttp)")
	}
	t.Setenv("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in examples/
	// docs/servers.md:
	//   baton --listen http=tcp://127.0.0.1:8080 --dir examples/aiohttp -- python3 serve.py
	b := recipeStart(t, []string{"--dir", filepath.Join(harness.ModuleRoot(), "examples", "aiohttp")}, python, "serve.py")
	url := "http://" + b.Addr(t, "http")
	serverDrains(t, b, 3, url+"/", serverSlowApp(b, url))
}

func TestRecipeNodeCluster(t *testing.T) {
	node := recipeNeed(t, "node", "nodejs")
	// docs/servers.md:
	//   baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node examples/node/cluster.js
	b := recipeStart(t, recipeReady, node, filepath.Join(harness.ModuleRoot(), "examples", "node", "cluster.js"))
	primary := b.WorkerPID(t, 1)
	harness.Eventually(t, 10*time.Second, "the primary's 2 cluster workers", func() bool {
		return len(harness.ProcsWhere(func(p harness.Proc) bool { return p.PPID == primary && p.Comm == "node" })) == 2
	})
	url := "http://" + b.Addr(t, "http")
	serverDrains(t, b, 3, url+"/", serverSlowApp(b, url))
}

// A child of the process baton started, with fd 3 passed on and
// LISTEN_PID still its parent's: drain.js takes the socket as a cluster
// worker does.
func TestRecipeNodeChild(t *testing.T) {
	node := recipeNeed(t, "node", "nodejs")
	server := filepath.Join(harness.ModuleRoot(), "examples", "node", "server.js")
	// The shell stays (no exec) and dies of TERM; --drain-group drains
	// the server in its group.
	b := recipeStart(t, append([]string{"--drain-group"}, recipeReady...), "sh", "-c", `"$0" "$1"; exit $?`, node, server)
	shell := b.WorkerPID(t, 1)
	harness.WaitProc(t, 10*time.Second, "node, a child of the shell", func(p harness.Proc) bool { return p.PPID == shell && p.Comm == "node" })
	stopCleanly(t, b, recipeReloads(t, b, 3))
}
