package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// server is one way of running and reloading the test server.
type server interface {
	// start runs it and returns once it answers.
	start() error
	// reload replaces it and returns once the old server is gone and the
	// new one serves.
	reload() error
	// servicePID is the PID a supervisor would watch.
	servicePID() int
	// holderPID is the process that keeps the sockets across reloads, or 0.
	holderPID() int
	// stop ends it and every process it started.
	stop() error
}

func newServer(cfg Config, mode, addr, dir string, logw io.Writer) server {
	switch mode {
	case "baton":
		return &batonServer{cfg: cfg, addr: addr, logw: logw}
	case "naive":
		return &naiveServer{childServer: childServer{cfg: cfg, addr: addr}}
	case "socket-holder":
		return &holderServer{childServer: childServer{cfg: cfg, addr: addr}}
	case "tableflip":
		return &tableflipServer{childServer: childServer{cfg: cfg, addr: addr}, pidFile: filepath.Join(dir, "tableflip.pid")}
	}
	panic("batonbench: no such mode " + mode) // run accepts only allModes
}

// runMode starts mode's server, puts the constant-rate load on it, reloads
// it cfg.Reloads times and summarizes what the clients saw between the
// first signal and the end of the last reload.
func runMode(cfg Config, mode string, logw io.Writer) (Result, error) {
	res := Result{Mode: mode}
	addr, err := freeAddr()
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	s := newServer(cfg, mode, addr, dir, logw)
	if err := s.start(); err != nil {
		s.stop()
		return res, fmt.Errorf("start: %w", err)
	}
	firstPID := s.servicePID()

	load, err := loadgen.Start(loadgen.Config{
		URL:         "http://" + addr + "/",
		NewConns:    cfg.NewConns,
		KeepAlive:   cfg.KeepAlive,
		Rate:        cfg.Rate,
		MaxDuration: cfg.modeDeadline,
		MaxRequests: int(cfg.Rate*cfg.modeDeadline.Seconds()) + 1000,
	})
	if err != nil {
		s.stop()
		return res, err
	}
	time.Sleep(cfg.gap) // steady load before the first reload

	from := time.Now()
	var to time.Time
	for i := 0; i < cfg.Reloads; i++ {
		if i > 0 {
			time.Sleep(cfg.gap)
		}
		t0 := time.Now()
		if err := s.reload(); err != nil {
			load.Stop()
			s.stop()
			return res, fmt.Errorf("reload %d: %w", i+1, err)
		}
		to = time.Now()
		res.ReloadMS = append(res.ReloadMS, ms(to.Sub(t0)))
	}
	if pid := s.holderPID(); pid > 0 {
		res.MasterRSSKB = rssKB(pid)
	}
	res.PIDStable = s.servicePID() == firstPID
	samples := load.Stop()
	stopErr := s.stop()

	sum := samples.Between(from, to).Summarize()
	res.Requests, res.Failed = sum.Requests, sum.Failed
	if len(sum.Errors) > 0 {
		res.Errors = sum.Errors
	}
	res.P50MS, res.P99MS, res.MaxMS = ms(sum.P50), ms(sum.P99), ms(sum.Max)
	res.ServerPIDs = len(sum.PIDs)
	for _, d := range res.ReloadMS {
		res.ReloadMeanMS += d / float64(len(res.ReloadMS))
		res.ReloadMaxMS = max(res.ReloadMaxMS, d)
	}
	res.ReloadMeanMS = round2(res.ReloadMeanMS)
	if stopErr != nil {
		return res, fmt.Errorf("stop: %w", stopErr)
	}
	return res, nil
}
