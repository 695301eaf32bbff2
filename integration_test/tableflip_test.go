package integration_test

import (
	"testing"

	"github.com/baton-sh/baton/internal/harness"
)

// An app built on github.com/cloudflare/tableflip, unmodified, runs as a
// baton worker with --protocol tableflip: its upg.Listen gets baton's
// socket, its upg.Ready is the readiness signal, and its drain signal
// (TERM, on which it calls upg.Stop) lets it finish its requests. Its PID
// no longer changes at every upgrade: baton's is the one to watch. (Had
// the app bound the address itself, it would have failed: baton holds it.)
func TestTableflipAppUnderBaton(t *testing.T) {
	app := harness.BuildProgram(t, "./examples/tableflip")
	addr := freePort(t)
	b := harness.Start(t, "--protocol", "tableflip", "--listen", "http=tcp://"+addr, "--", app, "-addr", addr)
	stopCleanly(t, b, reloadsUnderLoad(t, b, 5))
}
