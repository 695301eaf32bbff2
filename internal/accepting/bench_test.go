//go:build linux

package accepting

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkCheck measures a Check of a real generation while it starts
// (holding: every process holds the socket and none waits on it, so a
// Check reads all of the generation: what the master pays at every
// interval until the generation serves), and once it serves (serving).
// "watcher" is a Watcher's Check, as Wait makes them, after the first;
// "once" the package-level Check, which opens and closes every file.
//
//	go test -run '^$' -bench Check ./internal/accepting/
func BenchmarkCheck(b *testing.B) {
	for _, rc := range runtimes {
		b.Run(rc.name, func(b *testing.B) {
			l, sock := listen(b)
			socks := sockets(b, l)
			p := rc.start(b, l, sock)
			p.expect("holding", rc.holders)
			for _, serving := range []bool{false, true} {
				state := "holding"
				if serving {
					state = "serving"
					p.release()
					waitFound(b, p, socks)
				}
				b.Run(state+"/watcher", func(b *testing.B) {
					w := NewWatcher(p.pid(), socks)
					defer w.Close()
					benchChecks(b, w.Check, serving)
					b.ReportMetric(float64(generationThreads(b, p.pid())), "threads")
					b.ReportMetric(float64(w.Held()), "held")
				})
				b.Run(state+"/once", func(b *testing.B) {
					benchChecks(b, func() (Waiter, bool, error) { return Check(p.pid(), socks) }, serving)
				})
			}
		})
	}
}

// benchChecks runs check b.N times. A serving server may be missed now
// and then (a socketserver thread between two polls, say): the share of
// misses is reported, since the master would then see it a Check later.
func benchChecks(b *testing.B, check func() (Waiter, bool, error), serving bool) {
	misses := 0
	for b.Loop() {
		_, found, err := check()
		if err != nil {
			b.Fatal(err)
		}
		if found != serving {
			if !serving {
				b.Fatal("found a waiter in a generation that only holds the socket")
			}
			misses++
		}
	}
	if serving {
		b.ReportMetric(float64(misses)/float64(b.N), "misses/op")
	}
}

// BenchmarkWatcherThreads measures a Watcher's Check, after the first, of
// a Go server holding the socket with 1, 300 and 2,000 idle threads (and
// the runtime's own): the cost that does not grow with them.
//
//	go test -run '^$' -bench WatcherThreads ./internal/accepting/
func BenchmarkWatcherThreads(b *testing.B) {
	for _, idle := range []int{1, 300, 2000} {
		b.Run(fmt.Sprintf("%d", idle), func(b *testing.B) {
			l, sock := listen(b)
			socks := sockets(b, l)
			p := start(b, sock, []string{helperVar + "=goserver", fmt.Sprintf("%s=%d", idleVar, idle)}, os.Args[0])
			p.expect("holding", 1)
			w := NewWatcher(p.pid(), socks)
			defer w.Close()
			for range HotFor + SweepEvery { // past the start of its threads
				w.Check()
			}
			calls := w.calls
			benchChecks(b, w.Check, false)
			b.ReportMetric(float64(w.calls-calls)/float64(b.N), "reads/op")
			b.ReportMetric(float64(threads(p.pid())), "threads")
			b.ReportMetric(float64(w.Held()), "held")
		})
	}
}

// BenchmarkStatScan measures what a Check costs in enumerating the
// generation on a kernel without children files: reading the stat file
// of every process of the host.
func BenchmarkStatScan(b *testing.B) {
	s := NewWatcher(1, nil)
	pids, _ := s.numbers("/proc", nil)
	for b.Loop() {
		s.members = s.fromStat(1, s.members[:0])
	}
	b.ReportMetric(float64(len(pids)), "procs")
}

// generationThreads counts the threads of root and its descendants.
func generationThreads(tb testing.TB, root int) int {
	n := 0
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		n += threads(pid)
		var s procfs
		s.buf = make([]byte, 4096)
		tids, _ := s.numbers(s.pidPath(pid, 0, "/task"), nil)
		for _, tid := range tids {
			b, _ := s.read(s.pidPath(pid, tid, "/children"), 1<<16)
			for _, f := range fields(b, nil) {
				if v, ok := parseUint(f, 10); ok {
					queue = append(queue, int(v))
				}
			}
		}
	}
	return n
}
