package integration_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// The reload benchmark (scripts/bench.sh) keeps working: batonbench runs
// every mode with 2 reloads and writes its table and JSON. Only baton's row
// is held to a result: zero failed requests with a stable PID. The other
// rows are what they measure.
func TestBenchmarkRuns(t *testing.T) {
	var rep struct {
		Machine struct {
			CPUs   int
			Kernel string
		}
		Results []struct {
			Mode             string
			Requests, Failed int
			ReloadMS         []float64 `json:"reload_ms"`
			MasterRSSKB      int       `json:"master_rss_kb"`
			PIDStable        bool      `json:"pid_stable"`
		}
	}
	table, b := runBatonbench(t, &rep, "-reloads", "2", "-gap", "200ms", "-rate", "200",
		"-tableflip", harness.BuildProgram(t, "./cmd/tableflipworker"))
	if rep.Machine.CPUs < 1 || rep.Machine.Kernel == "" {
		t.Errorf("the report does not say what machine it ran on: %s", b)
	}
	want := []string{"baton", "naive", "socket-holder", "tableflip"}
	if len(rep.Results) != len(want) {
		t.Fatalf("%d results, want %d: %s", len(rep.Results), len(want), b)
	}
	for i, r := range rep.Results {
		if r.Mode != want[i] || r.Requests == 0 || len(r.ReloadMS) != 2 {
			t.Fatalf("result %d: %+v, want mode %s with requests and 2 reload durations", i, r, want[i])
		}
		if !strings.Contains(table, r.Mode) {
			t.Fatalf("the table has no row for %s", r.Mode)
		}
		switch r.Mode {
		case "baton":
			if r.Failed != 0 || !r.PIDStable || r.MasterRSSKB == 0 {
				t.Fatalf("baton: %+v, want 0 failed requests, a stable PID and the master's RSS", r)
			}
		case "socket-holder":
			if r.PIDStable || r.MasterRSSKB == 0 {
				t.Fatalf("socket-holder: %+v, want the server's PID changed and the holder's RSS", r)
			}
		default:
			if r.PIDStable {
				t.Fatalf("%s: the server's PID did not change across restarts", r.Mode)
			}
		}
	}
}

// runBatonbench runs batonbench with args, the test's baton and test
// worker and -json, failing the test unless it exits 0 within 90 s. It
// returns the table it printed and its JSON report, which it also
// decodes into rep.
func runBatonbench(t *testing.T, rep any, args ...string) (table string, report []byte) {
	t.Helper()
	bin := harness.Build(t)
	bench := harness.BuildProgram(t, "./cmd/batonbench")
	out := filepath.Join(t.TempDir(), "report.json")
	args = append(args, "-json", out, "-baton", bin.Baton, "-worker", bin.TestWorker)
	code, stdout, stderr := harness.RunProgram(t, 90*time.Second, bench, args...)
	if code != 0 {
		t.Fatalf("batonbench %s exited %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	t.Logf("batonbench:\n%s", stdout)
	report, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(report, rep); err != nil {
		t.Fatalf("batonbench -json: %v\n%s", err, report)
	}
	return stdout, report
}
