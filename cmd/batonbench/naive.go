package main

import "os/exec"

// naiveServer is the test worker binding its own port, restarted by stop
// and start.
type naiveServer struct{ childServer }

func (n *naiveServer) start() error {
	return n.startServing(exec.Command(n.cfg.worker, "-addr", n.addr))
}

func (n *naiveServer) reload() error {
	if err := n.stop(); err != nil {
		return err
	}
	return n.start()
}
