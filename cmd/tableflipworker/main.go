// Command tableflipworker is the test worker's HTTP server built the way
// github.com/cloudflare/tableflip documents it: the process upgrades itself
// on SIGHUP by starting its own successor, which inherits the listening
// socket, and exits once the successor is ready. batonbench runs it to
// compare baton with a self-upgrading server; unlike a worker under baton,
// its PID changes at every upgrade.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	var (
		addr    = flag.String("addr", "127.0.0.1:8080", "address to listen on")
		pidFile = flag.String("pidfile", "", "write the PID of the ready process here")
	)
	flag.Parse()

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		fail(err)
	}
	defer upg.Stop()

	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
		for s := range sigs {
			if s != syscall.SIGHUP {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(); err != nil {
				fmt.Fprintf(os.Stderr, "tableflipworker %d: upgrade failed: %v\n", os.Getpid(), err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		fail(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tableflip pid=%d\n", os.Getpid())
	})
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strconv.Itoa(os.Getpid())))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			fmt.Fprintf(os.Stderr, "tableflipworker %d: %v\n", os.Getpid(), err)
		}
	}()
	if err := upg.Ready(); err != nil {
		fail(err)
	}
	<-upg.Exit()

	// The successor serves (or this is a stop): finish what was accepted.
	time.AfterFunc(30*time.Second, func() {
		fmt.Fprintf(os.Stderr, "tableflipworker %d: graceful shutdown timed out\n", os.Getpid())
		os.Exit(1)
	})
	srv.Shutdown(context.Background())
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "tableflipworker: %v\n", err)
	os.Exit(1)
}
