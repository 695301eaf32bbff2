package integration_test

import (
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// Without --dir and without $PWD (systemd's WorkingDirectory= and
// supervisord's directory= set none), baton says once, at start, that it
// resolved its working directory then and that --dir would follow a
// symlink; with --dir it does not.
func TestWorkDirWithoutPWDIsLogged(t *testing.T) {
	bin := harness.Build(t)
	isMsg := func(e harness.Event) bool { return e.Kind() == "workdir_fixed" }
	b := harness.StartWith(t, harness.Setup{Env: []string{"PWD="}}, "--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
	e := b.WaitFor(t, 20*time.Second, isMsg)
	if e.Str("level") != "info" || e.Str("dir") != b.Dir {
		t.Fatalf("%v: want level info and dir %s", e, b.Dir)
	}
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" })
	if n := len(b.Find(isMsg)); n != 1 {
		t.Fatalf("baton said %d times that its working directory was resolved once, want 1", n)
	}

	withDir := harness.StartWith(t, harness.Setup{Env: []string{"PWD="}},
		"--listen", "http=tcp://127.0.0.1:0", "--dir", t.TempDir(), "--", bin.TestWorker)
	withDir.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" })
	if len(withDir.Find(isMsg)) != 0 {
		t.Fatal("with --dir baton still says its working directory was resolved once")
	}
}
