package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"time"
)

// What the worker writes to its stdout and stderr, for the tests of
// --worker-output: numbered lines on both streams at start, ticks at an
// interval (each written in two parts, so that a line is often half
// written when baton hands its pipe over), a flood at a given rate, and
// lines while it drains.
type chatter struct {
	say       int
	tick      time.Duration
	flood     int
	drainSay  int
	written   atomic.Int64 // flood lines written
	maxWrite  atomic.Int64 // the longest a flood write took, in ns
	drainDone chan struct{}
}

func (c *chatter) start(drain []os.Signal) {
	pid := os.Getpid()
	for i := 1; i <= c.say; i++ {
		fmt.Fprintf(os.Stdout, "testworker: stdout line %d pid=%d\n", i, pid)
		fmt.Fprintf(os.Stderr, "testworker: stderr line %d pid=%d\n", i, pid)
	}
	if c.tick > 0 {
		go func() {
			for i := 1; ; i++ {
				time.Sleep(c.tick)
				fmt.Fprintf(os.Stdout, "testworker: tick ")
				fmt.Fprintf(os.Stderr, "testworker: tock ")
				time.Sleep(c.tick / 2) // half the time, a line is half written
				fmt.Fprintf(os.Stdout, "%d pid=%d\n", i, pid)
				fmt.Fprintf(os.Stderr, "%d pid=%d\n", i, pid)
			}
		}()
	}
	if c.flood > 0 {
		go c.flooding(pid)
	}
	c.drainDone = make(chan struct{})
	if c.drainSay <= 0 {
		close(c.drainDone)
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, drain...)
	go func() {
		<-sig
		for i := 1; i <= c.drainSay; i++ {
			fmt.Fprintf(os.Stderr, "testworker: draining line %d pid=%d\n", i, pid)
			time.Sleep(20 * time.Millisecond)
		}
		close(c.drainDone)
	}()
}

// flooding writes c.flood lines a second to stdout, 100 bytes each, in
// one write every 10 ms, and keeps the longest any write took.
func (c *chatter) flooding(pid int) {
	per := max(c.flood/100, 1)
	var buf []byte
	next := time.Now()
	for n := 0; ; {
		buf = buf[:0]
		for range per {
			n++
			line := fmt.Appendf(nil, "testworker: flood line %d pid=%d ", n, pid)
			for len(line) < 99 {
				line = append(line, '.')
			}
			buf = append(append(buf, line...), '\n')
		}
		start := time.Now()
		os.Stdout.Write(buf)
		if d := int64(time.Since(start)); d > c.maxWrite.Load() {
			c.maxWrite.Store(d)
		}
		c.written.Add(int64(per))
		next = next.Add(10 * time.Millisecond)
		time.Sleep(time.Until(next))
	}
}

func (c *chatter) handle(mux *http.ServeMux) {
	mux.HandleFunc("/flooded", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "written=%d maxwrite=%s\n", c.written.Load(), time.Duration(c.maxWrite.Load()))
	})
}

// finish waits for the lines of the drain, then says the worker exits
// cleanly: the last thing it does.
func (c *chatter) finish() {
	if c.drainSay <= 0 {
		return
	}
	<-c.drainDone
	fmt.Fprintf(os.Stderr, "testworker: exiting cleanly pid=%d\n", os.Getpid())
}
