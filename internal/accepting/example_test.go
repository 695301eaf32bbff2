//go:build linux

package accepting_test

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/baton-sh/baton/internal/accepting"
)

// The master under --ready accepting, while a generation starts: Wait
// runs beside the lifecycle loop and reports into it; the loop cancels it
// once the generation stops starting.
func ExampleWait() {
	var held []*os.File // the master's sockets, fd 3, 4, … of every worker
	var workerPID int   // the generation just started
	ready := make(chan error, 1)

	socks, err := accepting.NewSockets(filesToConns(held)...)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // when the generation is ready, exits or times out
	go func() {
		w, err := accepting.Wait(ctx, workerPID, socks, accepting.DefaultInterval)
		if err == nil {
			fmt.Printf("worker ready: %v\n", w) // pid 812, thread 812, in epoll_wait on …
		}
		ready <- err
	}()
	<-ready
}

// Under --ready notify, when the ready timeout fires.
func ExampleNeverReadyHint() {
	var socks *accepting.Sockets
	var workerPID int
	msg := fmt.Sprintf("new worker (pid %d) was not ready after 60s", workerPID)
	if hint := accepting.NeverReadyHint(workerPID, socks); hint != "" {
		msg += ": " + hint // it waits for connections (…) but never sent READY=1; …
	}
	fmt.Println(msg)
}

func filesToConns(files []*os.File) []syscall.Conn {
	conns := make([]syscall.Conn, len(files))
	for i, f := range files {
		conns[i] = f
	}
	return conns
}
