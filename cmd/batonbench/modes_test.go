package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-sh/baton/internal/harness"
)

// The subcommands keep working with the real baton and test worker, in a
// short run each. Only baton's setups run: PM2 and uWSGI are compared by
// hand, never here.

func TestWorkersRunsBaton(t *testing.T) {
	bin := harness.Build(t)
	out := filepath.Join(t.TempDir(), "workers.json")
	var stdout, stderr bytes.Buffer
	code := workersCmd([]string{"-baton", bin.Baton, "-worker", bin.TestWorker, "-setups", "go", "-workers", "2",
		"-reloads", "2", "-rate", "200", "-warmup", "100ms", "-steady", "300ms", "-gap", "400ms", "-json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("workers exited %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	var rep WorkersReport
	b, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 {
		t.Fatalf("%d runs, want one of baton and one of baton-surge1:\n%s", len(rep.Runs), &stdout)
	}
	for _, r := range rep.Runs {
		if r.Failed != 0 || r.Requests == 0 || len(r.ReloadMS) != 2 || r.Steady.PerSecond == 0 || r.Reload.Requests == 0 {
			t.Errorf("%s: %+v\nwant requests in the steady load and in the reloads, 2 reloads, 0 failed", r.Setup, r)
		}
		if r.Master.FDs == 0 || r.Master.RssAnonKB == 0 || len(r.MasterCPUMS) != 2 || len(r.StartCPUMS) != 2 || r.StartPhase == nil {
			t.Errorf("%s: master %+v, CPU %v, start CPU %v, start phase %v: want each", r.Setup, r.Master, r.MasterCPUMS, r.StartCPUMS, r.StartPhase)
		}
		if !strings.Contains(stdout.String(), r.Setup) {
			t.Errorf("the table has no row for %s:\n%s", r.Setup, &stdout)
		}
	}
}

func TestWorkersSkipsWhatIsNotInstalled(t *testing.T) {
	bin := harness.Build(t)
	var stdout, stderr bytes.Buffer
	missing := filepath.Join(t.TempDir(), "none")
	code := workersCmd([]string{"-baton", bin.Baton, "-worker", bin.TestWorker, "-setups", "pm2,uwsgi",
		"-pm2", missing, "-uwsgi", missing, "-node", missing}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("workers exited %d, want 0 with every setup skipped\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	for _, want := range []string{"pm2: skipped: node not found (", "uwsgi: skipped: uwsgi not found (Debian: apt-get install uwsgi"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, &stdout)
		}
	}
}

func TestFootprintRuns(t *testing.T) {
	bin := harness.Build(t)
	out := filepath.Join(t.TempDir(), "footprint.json")
	var stdout, stderr bytes.Buffer
	code := footprintCmd([]string{"-baton", bin.Baton, "-worker", bin.TestWorker, "-counts", "1,3", "-reload-counts", "3",
		"-reloads", "3", "-idle", "200ms", "-json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("footprint exited %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	var rep FootprintReport
	b, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want 2:\n%s", len(rep.Results), &stdout)
	}
	one, three := rep.Results[0], rep.Results[1]
	if one.Reloaded != nil || three.Reloaded == nil || len(three.ReloadMS) != 3 {
		t.Errorf("reloaded: 1 worker %v, 3 workers %v with %d reloads; want only the 3 reloaded, 3 times", one.Reloaded, three.Reloaded, len(three.ReloadMS))
	}
	// Each worker costs the master the same fds.
	if one.Idle.FDs == 0 || one.Idle.RssAnonKB == 0 || three.Idle.FDs <= one.Idle.FDs || three.FDKinds["pidfd"] <= one.FDKinds["pidfd"] {
		t.Errorf("1 worker %+v %v, 3 workers %+v %v: want more fds and pidfds with more workers", one.Idle, one.FDKinds, three.Idle, three.FDKinds)
	}
	// The keeper shares the binary's pages with the master: their PSS is
	// less than their RSS added up.
	if k := one.Keeper; k.PssKB == 0 || one.Idle.PssKB == 0 || one.Idle.PssKB+k.PssKB >= one.Idle.VmRSSKB+k.VmRSSKB {
		t.Errorf("master %+v, keeper %+v: want PSS read for both, less than their VmRSS together", one.Idle, k)
	}
	if three.Reloaded != nil && three.Reloaded.FDs != three.Idle.FDs {
		t.Errorf("the master's fds went from %d to %d over 3 reloads", three.Idle.FDs, three.Reloaded.FDs)
	}
}

func TestShimRuns(t *testing.T) {
	bin := harness.Build(t)
	var stdout, stderr bytes.Buffer
	if code := shimCmd([]string{"-baton", bin.Baton, "-n", "3"}, &stdout, &stderr); code != 0 {
		t.Fatalf("shim exited %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	if !strings.Contains(stdout.String(), "the shim's cost") {
		t.Errorf("no cost in:\n%s", &stdout)
	}
}
