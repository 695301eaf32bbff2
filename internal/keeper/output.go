//go:build linux

package keeper

import (
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/proc"
	"github.com/baton-sh/baton/internal/workerlog"
)

// While the master lives, the keeper only holds the read ends of the
// workers' output pipes (OpWorker), which costs nothing. Once the master
// is gone it reads them, so that a worker draining meanwhile keeps
// logging instead of dying of SIGPIPE (or EPIPE) at its next line, until
// the end of each pipe or outputDrain after everything the master left
// has exited.

// outputDrain bounds how long the keeper reads worker output once
// everything the master left has exited: only a process that escaped
// the keeper keeps a pipe open then.
const outputDrain = time.Second

// outputReading is the keeper's readers of worker output.
type outputReading struct {
	readers []*workerlog.Reader
	done    sync.WaitGroup
}

// readOutput starts reading the output pipes of every worker the master
// told of.
func (k *keeper) readOutput() *outputReading {
	o := &outputReading{}
	cfg := &workerlog.Config{Out: k.log, Console: !k.cfg.LogJSON, Rate: k.cfg.OutputRate, Process: "keeper"}
	for _, m := range k.known {
		if len(m.out) != 2 {
			continue
		}
		// The worker's slot, from its environment while it still runs.
		src := workerlog.Source{Gen: m.gen, PID: m.pid, Index: -1}
		if v, ok, _ := proc.Getenv(m.pid, envnames.WorkerIndex); ok {
			if i, err := strconv.Atoi(v); err == nil && !m.fd.Exited() {
				src.Index = i
			}
		}
		lim := workerlog.NewLimiter(*cfg)
		for i, fd := range m.out {
			r := workerlog.NewReader(os.NewFile(uintptr(fd), "worker output"), cfg, src, workerlog.Stream(i+1), lim, workerlog.State{})
			o.readers = append(o.readers, r)
			o.done.Add(1)
			go func() {
				defer o.done.Done()
				r.Run()
			}()
		}
		m.out = nil
	}
	return o
}

// wait waits up to d for every pipe's end, then stops reading.
func (o *outputReading) wait(d time.Duration) {
	done := make(chan struct{})
	go func() {
		o.done.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		for _, r := range o.readers {
			r.Stop()
		}
		<-done
	}
}
