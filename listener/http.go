package listener

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

// ServeHTTP runs srv on l until one of drainSignals arrives (SIGTERM, baton's
// default drain signal, when none are given), then shuts it down the way a
// handoff needs:
//
//  1. Ready is sent as soon as srv is about to accept, so baton can drain
//     the previous generation.
//  2. On the drain signal, srv stops accepting (the socket stays open in
//     baton and in the next generation, so nothing is refused), closes idle
//     keep-alive connections, and answers in-flight requests with
//     "Connection: close" before it closes their connections.
//  3. ServeHTTP returns nil once every in-flight request has finished.
//
// There is no timeout of its own: baton's --drain-timeout bounds the drain.
// Without baton it is simply a server that stops gracefully on SIGTERM.
func ServeHTTP(srv *http.Server, l net.Listener, drainSignals ...os.Signal) error {
	if len(drainSignals) == 0 {
		drainSignals = []os.Signal{syscall.SIGTERM}
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, drainSignals...)
	defer signal.Stop(sigc)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if err := Ready(); err != nil {
		srv.Close()
		return err
	}
	select {
	case err := <-served:
		return err
	case <-sigc:
	}
	Stopping()
	if err := srv.Shutdown(context.Background()); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
