package integration_test

import (
	"os"
	"path/filepath"
	"strings"
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

// serverSlowApp is the slow request of an app that says "slow request
// started" on its output when it begins one.
func serverSlowApp(b *harness.Baton, url string) func(t *testing.T) <-chan harness.Answer {
	return func(t *testing.T) <-chan harness.Answer { return b.InFlight(t, url, serverSlow) }
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
