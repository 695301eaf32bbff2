// Command tableflip is an HTTP server built on github.com/cloudflare/tableflip
// the way its documentation shows, and it runs unchanged in two ways:
//
// On its own, it upgrades itself: on SIGHUP it starts its successor, which
// inherits the socket, and exits once the successor is ready. Its PID
// changes at every upgrade, which is what a process supervisor cannot
// follow.
//
//	tableflip -addr 127.0.0.1:8080
//
// As a baton worker, baton speaks tableflip's parent side: upg.Listen gets
// baton's socket (network and address must be written exactly as in
// --listen), upg.Ready tells baton the new generation serves, and baton's
// drain signal (TERM) makes the app call upg.Stop and finish its requests.
// baton keeps one PID and handles HUP itself.
//
//	baton --protocol tableflip --listen http=tcp://127.0.0.1:8080 -- tableflip -addr 127.0.0.1:8080
//
// For the drain it uses listener.HTTPDrainer rather than http.Server's
// Shutdown alone, which drops the requests of connections accepted just
// before the listener closed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/baton-sh/baton/listener"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.Parse()

	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		fail(err)
	}
	defer upg.Stop()

	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
		for s := range sigs {
			if s == syscall.SIGTERM {
				upg.Stop() // closes the listener; Exit() follows
				return
			}
			if err := upg.Upgrade(); err != nil {
				fmt.Fprintln(os.Stderr, "tableflip: upgrade failed:", err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		fail(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "tableflip app pid=%d\n", os.Getpid())
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	drainer := listener.NewHTTPDrainer(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := upg.Ready(); err != nil {
		fail(err)
	}
	<-upg.Exit()
	ln.Close()
	<-served // the accept loop has ended

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := drainer.Drain(ctx); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tableflip:", err)
	os.Exit(1)
}
