//go:build linux

package accepting

import (
	"testing"
)

// BenchmarkCheck measures one Check of a real generation while it starts
// (holding: every process holds the socket, none waits on it, so Check
// reads all of the generation, which is what the master pays every
// interval until the generation serves) and once it serves (found: the
// last Check).
//
//	go test -run '^$' -bench Check ./internal/accepting/
func BenchmarkCheck(b *testing.B) {
	for _, rc := range runtimes {
		b.Run(rc.name, func(b *testing.B) {
			l, sock := listen(b)
			socks := sockets(b, l)
			p := rc.start(b, l, sock)
			p.expect("holding", rc.holders)
			b.Run("holding", func(b *testing.B) {
				for b.Loop() {
					if _, found, err := Check(p.pid(), socks); found || err != nil {
						b.Fatal(found, err)
					}
				}
				b.ReportMetric(float64(generationThreads(b, p.pid())), "threads")
			})
			p.release()
			waitFound(b, p, socks)
			b.Run("serving", func(b *testing.B) {
				for b.Loop() {
					if _, found, err := Check(p.pid(), socks); !found || err != nil {
						b.Fatal(found, err)
					}
				}
			})
		})
	}
}

// BenchmarkStatScan measures what a Check costs in enumerating the
// generation on a kernel without children files: reading the stat file
// of every process of the host.
func BenchmarkStatScan(b *testing.B) {
	var s scanner
	s.procfs = procfs{buf: make([]byte, 4096)}
	pids, _ := s.numbers("/proc", nil)
	for b.Loop() {
		s.queue = s.fromStat(1, s.queue[:0])
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
