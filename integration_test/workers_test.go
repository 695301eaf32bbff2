package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/upgrader"
)

// Several workers per generation (--workers), with real servers under
// POST load: every reload replaces every worker with none refused or cut,
// --max-surge 1 replaces them one at a time, a release that breaks one
// worker rolls back, a killed worker comes back alone, and the count
// changes at run time. Each test reuses one baton for its whole story.

// fleetLoad keeps 4 loops on new connections and 4 on keep-alive ones
// POSTing to url, bounded to two minutes: a client never resends a POST,
// so every request a worker drops counts.
func fleetLoad(t *testing.T, url string) *loadgen.Load {
	t.Helper()
	load, err := loadgen.Start(loadgen.Config{URL: url, NewConns: 4, KeepAlive: 4, PostBody: []byte("fleet"), MaxDuration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop() })
	harness.Eventually(t, 20*time.Second, "load under way", func() bool { return load.Done() >= 200 })
	return load
}

// fleetSettled waits until exactly n workers run and serve, every one of
// generation gen (any generation if gen is 0): nothing starting, nothing
// draining. It returns that status.
func fleetSettled(t *testing.T, b *harness.Baton, n, gen int) upgrader.Status {
	t.Helper()
	return b.WaitState(t, 60*time.Second, fmt.Sprintf("%d workers of generation %d serving, none starting or draining", n, gen),
		func(s upgrader.Status) bool {
			if len(s.Workers) != n || s.WorkerCount != n {
				return false
			}
			for _, w := range s.Workers {
				if w.State != "serving" || w.Probation || (gen != 0 && w.Generation != gen) {
					return false
				}
			}
			return true
		})
}

// bySlot maps each slot to its worker's PID; it fails the test if a slot
// has two workers or the slots are not 0..n-1.
func bySlot(t *testing.T, st upgrader.Status) map[int]int {
	t.Helper()
	pids := map[int]int{}
	for _, w := range st.Workers {
		if _, dup := pids[w.Index]; dup {
			t.Fatalf("slot %d has two workers: %+v", w.Index, st.Workers)
		}
		pids[w.Index] = w.PID
	}
	for i := range len(pids) {
		if _, ok := pids[i]; !ok {
			t.Fatalf("slots are not 0..%d: %+v", len(pids)-1, st.Workers)
		}
	}
	return pids
}

// requireSame fails the test unless the workers of slots keep the PIDs
// they had before.
func requireSame(t *testing.T, what string, before, now map[int]int, slots ...int) {
	t.Helper()
	for _, i := range slots {
		if before[i] != now[i] {
			t.Fatalf("%s: worker %d is pid %d, was %d; want it left alone", what, i, now[i], before[i])
		}
	}
}

// workerEnv reads the BATON_* variables a worker started with.
func workerEnv(t *testing.T, pid int) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("environment of worker %d: %v", pid, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(raw), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "BATON_") {
			env[k] = v
		}
	}
	return env
}

// requireWorkerEnv fails the test unless every worker of st was told its
// slot, the worker count it started with, and its generation.
func requireWorkerEnv(t *testing.T, st upgrader.Status, count int) {
	t.Helper()
	for _, w := range st.Workers {
		env := workerEnv(t, w.PID)
		want := map[string]string{"BATON_WORKER_INDEX": strconv.Itoa(w.Index), "BATON_WORKERS": strconv.Itoa(count), "BATON_GENERATION": strconv.Itoa(w.Generation)}
		for k, v := range want {
			if env[k] != v {
				t.Fatalf("worker %d (pid %d) has %s=%q, want %q", w.Index, w.PID, k, env[k], v)
			}
		}
	}
}

// fleetReloads reloads b n times with SIGHUP while load runs, and requires
// of each reload that it completes with a new generation of count workers
// in which no PID is an old one, every old worker gone. It returns how
// long each reload took, as baton logged it.
func fleetReloads(t *testing.T, b *harness.Baton, count, n int, load *loadgen.Load) []string {
	t.Helper()
	st := fleetSettled(t, b, count, 0)
	gen := st.Generation
	var took []string
	for i := 1; i <= n; i++ {
		before := load.Done()
		old := bySlot(t, st)
		end := b.Reload(t, 60*time.Second)
		if end.Kind() != "reload_complete" || end.Int("gen") != gen+i {
			t.Fatalf("reload %d: %v, want generation %d complete", i, end, gen+i)
		}
		took = append(took, end.Str("took"))
		st = fleetSettled(t, b, count, gen+i)
		for slot, pid := range bySlot(t, st) {
			for oldSlot, oldPID := range old {
				if pid == oldPID {
					t.Fatalf("reload %d: worker %d is still pid %d (worker %d before the reload)", i, slot, pid, oldSlot)
				}
				if harness.Alive(oldPID) {
					t.Fatalf("reload %d: old worker %d (pid %d) is still alive after the reload completed", i, oldSlot, oldPID)
				}
			}
		}
		harness.Eventually(t, 20*time.Second, "requests flowing after the reload", func() bool { return load.Done() >= before+100 })
	}
	return took
}

// stopFleet sends TERM and requires exit 0 with every worker of st gone.
func stopFleet(t *testing.T, b *harness.Baton, st upgrader.Status) {
	t.Helper()
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d after TERM, want 0", code)
	}
	for _, w := range st.Workers {
		if harness.Alive(w.PID) {
			t.Fatalf("worker %d (pid %d) outlived the master", w.Index, w.PID)
		}
	}
}

// docs/workers.md: baton --listen http=tcp://127.0.0.1:3000 --workers 4 --ready accepting -- node server.js
//
// Four Node.js workers: five reloads under load replace all four each
// time; a SIGKILLed worker is restarted alone; scale and SIGTTIN/SIGTTOU
// change the count under load without touching the workers that stay.
func TestNodeFourWorkersReloadRestartAndScale(t *testing.T) {
	node := recipeNeed(t, "node", "nodejs")
	b := recipeStart(t, []string{"--workers", "4", "--ready", "accepting"}, node, filepath.Join(harness.ModuleRoot(), "examples", "node", "server.js"))
	url := "http://" + b.Addr(t, "http") + "/"
	st := fleetSettled(t, b, 4, 1)
	requireWorkerEnv(t, st, 4)

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"5 reloads replace every worker", func(t *testing.T) {
			load := fleetLoad(t, url)
			took := fleetReloads(t, b, 4, 5, load)
			sum := requireNoFailures(t, load)
			t.Logf("5 reloads of 4 Node.js workers: %d requests, %d failed, answered by %d worker pids; reloads took %s",
				sum.Requests, sum.Failed, len(sum.PIDs), strings.Join(took, ", "))
			st = fleetSettled(t, b, 4, 6)
			requireWorkerEnv(t, st, 4)
		}},
		{"a killed worker is restarted alone", func(t *testing.T) {
			// No load here: a SIGKILL cuts whatever the killed worker had
			// accepted, which no master can save. The others keep serving.
			before := bySlot(t, st)
			killed := before[2]
			if err := syscall.Kill(killed, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			st = b.WaitState(t, 30*time.Second, "worker 2 restarted", func(s upgrader.Status) bool {
				for _, w := range s.Workers {
					if w.Index == 2 && w.PID != killed && w.State == "serving" {
						return len(s.Workers) == 4
					}
				}
				return false
			})
			now := bySlot(t, st)
			requireSame(t, "after worker 2 was killed", before, now, 0, 1, 3)
			for _, w := range st.Workers {
				if want := map[bool]int{true: 1, false: 0}[w.Index == 2]; w.Restarts != want || w.Generation != 6 {
					t.Fatalf("worker %d: %d restarts, generation %d; want %d and 6", w.Index, w.Restarts, w.Generation, want)
				}
			}
			if st.Restarts != 1 || st.LastReload == nil || st.LastReload.Trigger != "crash" || st.Generation != 6 {
				t.Fatalf("status after the restart: restarts %d, last reload %+v, generation %d", st.Restarts, st.LastReload, st.Generation)
			}
			t.Logf("worker 2 (pid %d) SIGKILLed: pid %d serves in its place after %s (last_reload took %.3fs), workers 0, 1, 3 untouched",
				killed, now[2], time.Since(start).Round(time.Millisecond), st.LastReload.TookSeconds)
		}},
		{"scale 6, scale 2, SIGTTIN, SIGTTOU under load", func(t *testing.T) {
			load := fleetLoad(t, url)
			scale := func(n int) {
				t.Helper()
				before := bySlot(t, st)
				start := time.Now()
				code, out, errOut := harness.Run(t, 60*time.Second, "scale", strconv.Itoa(n), "--wait", "--pidfile", b.PIDFile)
				if code != 0 || !strings.Contains(out, fmt.Sprintf("%d workers", n)) {
					t.Fatalf("baton scale %d --wait: exit %d, %q %q", n, code, out, errOut)
				}
				st = fleetSettled(t, b, n, 6)
				t.Logf("baton scale %d --wait: %s in %s", n, strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))
				kept := min(n, len(before))
				requireSame(t, fmt.Sprintf("after scale %d", n), before, bySlot(t, st), slots(kept)...)
				for i := kept; i < len(before); i++ {
					if harness.Alive(before[i]) {
						t.Fatalf("after scale %d: removed worker %d (pid %d) is alive", n, i, before[i])
					}
				}
			}
			signal := func(sig syscall.Signal, name string, n int) {
				t.Helper()
				before := bySlot(t, st)
				start := time.Now()
				b.Signal(t, sig)
				st = fleetSettled(t, b, n, 6)
				t.Logf("%s: %d workers serving after %s", name, n, time.Since(start).Round(time.Millisecond))
				requireSame(t, "after "+name, before, bySlot(t, st), slots(min(n, len(before)))...)
			}
			scale(6)
			// The added workers run the serving generation and know the
			// new count; the first four keep theirs.
			for _, w := range st.Workers {
				env, count := workerEnv(t, w.PID), map[bool]string{true: "6", false: "4"}[w.Index >= 4]
				if env["BATON_WORKERS"] != count || env["BATON_WORKER_INDEX"] != strconv.Itoa(w.Index) || env["BATON_GENERATION"] != "6" {
					t.Fatalf("worker %d after scale 6: %v, want BATON_WORKERS=%s", w.Index, env, count)
				}
			}
			scale(2)
			signal(syscall.SIGTTIN, "SIGTTIN", 3)
			signal(syscall.SIGTTOU, "SIGTTOU", 2)
			sum := requireNoFailures(t, load)
			t.Logf("scale 6, scale 2, TTIN, TTOU: %d requests, %d failed", sum.Requests, sum.Failed)
		}},
	}
	for _, step := range steps {
		if !t.Run(step.name, step.run) {
			return
		}
	}
	stopFleet(t, b, st)
	requireNoZombies(t, b.PID())
}

// slots is 0..n-1.
func slots(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// docs/workers.md: baton --workers 4 --max-surge 1 --dir /srv/app/current … -- /srv/app/current/app
//
// A rolling reload, one worker at a time, of releases deployed the way a
// deploy tool does it: never more than one new worker starting and never
// fewer than four serving, as `baton status --json` shows it throughout;
// then a release whose worker 2 cannot start, after workers 0 and 1 were
// replaced, is rolled back to four workers of the release before it, and
// the next good release goes out.
func TestNodeRollingReloadOneAtATimeRollsBack(t *testing.T) {
	node := recipeNeed(t, "node", "nodejs")
	server := filepath.Join(harness.ModuleRoot(), "examples", "node", "server.js")
	app := t.TempDir()
	harness.Release(t, app, 1, node, server)
	current := filepath.Join(app, "current")
	b := recipeStart(t, []string{"--workers", "4", "--max-surge", "1", "--ready", "accepting", "--dir", current}, filepath.Join(current, "app"))
	url := "http://" + b.Addr(t, "http") + "/"
	st := fleetSettled(t, b, 4, 1)
	gen := 1

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"one worker starting at a time, never fewer than 4 serving", func(t *testing.T) {
			load := fleetLoad(t, url)
			var took []string
			for release := 2; release <= 3; release++ {
				harness.Release(t, app, release, node, server)
				before := bySlot(t, st)
				ends := len(b.Find(isReloadEnd))
				logFrom := len(b.Events())
				b.Signal(t, syscall.SIGHUP)
				samples, maxStarting, minServing, seen := 0, 0, 99, []int{}
				for len(b.Find(isReloadEnd)) == ends {
					s := b.State(t)
					samples++
					starting, serving := 0, 0
					for _, w := range s.Workers {
						switch {
						case w.State == "starting":
							starting++
							if w.Generation == gen+1 && !slices.Contains(seen, w.Index) {
								seen = append(seen, w.Index)
							}
						case w.State == "serving":
							serving++
						}
					}
					maxStarting, minServing = max(maxStarting, starting), min(minServing, serving)
					if starting > 1 || serving < 4 {
						t.Fatalf("release %d: %d workers starting and %d serving at once, want at most 1 and at least 4: %+v", release, starting, serving, s.Workers)
					}
					if samples > 3000 {
						t.Fatal("the reload did not end within 3000 samples of baton status --json")
					}
				}
				gen++
				end := b.Find(isReloadEnd)[ends]
				if end.Kind() != "reload_complete" || end.Int("gen") != gen {
					t.Fatalf("release %d: %v, want generation %d complete", release, end, gen)
				}
				// The samples show the reload as an operator sees it; the log,
				// every step of it.
				if samples < 2 {
					t.Fatalf("release %d: the reload ended after %d samples of baton status --json, too soon to show anything", release, samples)
				}
				if order := requireOneStartingInLog(t, b.Events()[logFrom:], before); !slices.Equal(order, []int{0, 1, 2, 3}) {
					t.Fatalf("release %d: the new workers started in the order %v, want 0, 1, 2, 3 one after another", release, order)
				}
				took = append(took, end.Str("took"))
				st = fleetSettled(t, b, 4, gen)
				for slot, pid := range bySlot(t, st) {
					if hasPID(before, pid) {
						t.Fatalf("release %d: worker %d kept pid %d", release, slot, pid)
					}
					if dir := procCwd(t, pid); dir != filepath.Join(app, "releases", strconv.Itoa(release)) {
						t.Fatalf("release %d: worker %d runs in %s", release, slot, dir)
					}
				}
				t.Logf("release %d: %d samples of baton status --json during the reload: at most %d starting, at least %d serving, workers %v seen starting; took %s",
					release, samples, maxStarting, minServing, seen, end.Str("took"))
			}
			sum := requireNoFailures(t, load)
			t.Logf("2 rolling reloads with --max-surge 1: %d requests, %d failed; reloads took %s", sum.Requests, sum.Failed, strings.Join(took, ", "))
		}},
		{"a release that breaks worker 2 rolls back", func(t *testing.T) {
			load := fleetLoad(t, url)
			before := bySlot(t, st)
			// Release 4 starts workers 0 and 1 but not worker 2.
			harness.Release(t, app, 4, "/bin/sh", "-c",
				`if [ "$BATON_WORKER_INDEX" = 2 ]; then echo "release 4: worker 2 cannot start" >&2; exit 1; fi; exec "$0" "$1"`, node, server)
			code, out, errOut := b.ReloadWait(t, 60*time.Second)
			if code != 1 || !strings.Contains(errOut, "rolled back") {
				t.Fatalf("baton reload --wait of a release that breaks worker 2: exit %d, %q %q; want exit 1 saying it rolled back", code, out, errOut)
			}
			b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "rolling_back" })
			st = fleetSettled(t, b, 4, gen)
			if r := st.LastReload; r == nil || r.Result != "rolled_back" || r.OK || r.Generation != gen {
				t.Fatalf("last_reload after the rollback: %+v, want result rolled_back with generation %d serving", r, gen)
			}
			now := bySlot(t, st)
			// Workers 0 and 1 were replaced by release 4 and moved back:
			// fresh workers of release 3, though current points to 4.
			requireSame(t, "after the rollback", before, now, 2, 3)
			for _, i := range []int{0, 1} {
				if now[i] == before[i] {
					t.Fatalf("worker %d is still pid %d: release 4 should have replaced it before worker 2 failed", i, now[i])
				}
				if dir := procCwd(t, now[i]); dir != filepath.Join(app, "releases", "3") {
					t.Fatalf("rolled-back worker %d runs in %s, want release 3", i, dir)
				}
			}
			requireWorkerEnv(t, st, 4)
			sum := requireNoFailures(t, load)
			t.Logf("release 4 rolled back in %.3fs (%s): %d requests, %d failed", st.LastReload.TookSeconds, strings.TrimSpace(errOut), sum.Requests, sum.Failed)
		}},
		{"the next good release goes out", func(t *testing.T) {
			harness.Release(t, app, 5, node, server)
			code, out, errOut := b.ReloadWait(t, 60*time.Second)
			gen += 2 // the failed reload used up a number
			if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d", gen)) {
				t.Fatalf("baton reload --wait of release 5: exit %d, %q %q", code, out, errOut)
			}
			st = fleetSettled(t, b, 4, gen)
			t.Logf("release 5: %s", strings.TrimSpace(out))
		}},
	}
	for _, step := range steps {
		if !t.Run(step.name, step.run) {
			return
		}
	}
	stopFleet(t, b, st)
}

// requireOneStartingInLog replays a reload's log events, every step
// where the samples of `baton status` may fall between two: at no step may
// two new workers be starting at once, nor fewer than four serving. The
// workers of serving (slot to PID) serve when it begins. It returns the
// slots in the order their new workers started.
func requireOneStartingInLog(t *testing.T, events []harness.Event, serving map[int]int) (order []int) {
	t.Helper()
	starting, up := map[int]bool{}, map[int]bool{}
	for _, pid := range serving {
		up[pid] = true
	}
	for _, e := range events {
		pid := e.Int("pid")
		switch e.Kind() {
		case "worker_started":
			starting[pid] = true
			order = append(order, e.Int("index"))
		case "worker_ready":
			delete(starting, pid)
			up[pid] = true
		case "draining", "worker_exited":
			delete(starting, pid)
			delete(up, pid)
		}
		if len(starting) > 1 || len(up) < 4 {
			t.Fatalf("after %q of pid %d the log shows %d workers starting and %d serving, want at most 1 and at least 4", e.Kind(), pid, len(starting), len(up))
		}
	}
	return order
}

// hasPID reports whether pid is one of the workers of bySlot's map.
func hasPID(pids map[int]int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// procCwd is the working directory of pid.
func procCwd(t *testing.T, pid int) string {
	t.Helper()
	dir, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		t.Fatalf("working directory of %d: %v", pid, err)
	}
	return dir
}

// examples/asyncio/server.py: baton --listen http=tcp://127.0.0.1:8000 --workers 4 -- python3 examples/asyncio/server.py
//
// Four event loops of plain asyncio, each saying READY=1 by hand: three
// reloads under load replace all four each time, with no request lost.
func TestPythonAsyncioFourWorkers(t *testing.T) {
	python := ecoPython3(t)
	script := filepath.Join(harness.ModuleRoot(), "examples", "asyncio", "server.py")
	t.Run("under baton", func(t *testing.T) {
		b := recipeStart(t, []string{"--workers", "4"}, python, script)
		st := fleetSettled(t, b, 4, 1)
		requireWorkerEnv(t, st, 4)
		load := fleetLoad(t, "http://"+b.Addr(t, "http")+"/")
		took := fleetReloads(t, b, 4, 3, load)
		sum := requireNoFailures(t, load)
		t.Logf("3 reloads of 4 asyncio workers: %d requests, %d failed, answered by %d worker pids; reloads took %s",
			sum.Requests, sum.Failed, len(sum.PIDs), strings.Join(took, ", "))
		st = fleetSettled(t, b, 4, 4)
		stopFleet(t, b, st)
		if out := b.Output(); strings.Contains(out, "Traceback") {
			t.Fatalf("the asyncio server raised:\n%s", out)
		}
	})
	t.Run("without baton", func(t *testing.T) {
		addr := freePort(t)
		ecoStandalone(t, addr, python, script, addr)
	})
}
