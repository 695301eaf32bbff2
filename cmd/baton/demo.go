package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/internal/logging"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/listener"
	"github.com/baton-sh/baton/upgrader"
)

// demoWorkerArg runs the demo's bundled worker: baton re-executes itself
// with it, so the demo needs nothing but the baton binary.
const demoWorkerArg = "__demo-worker"

// demoCmd runs a master over the bundled worker on a free loopback port,
// keeps requests flowing on new and keep-alive connections, reloads a few
// times, and prints what the clients saw.
func demoFlagSet() (fs *flag.FlagSet, reloads *int, logLevel *string) {
	fs = flag.NewFlagSet("demo", flag.ContinueOnError)
	return fs, fs.Int("reloads", 5, "how many reloads to perform, 1 to 100"),
		fs.String("log-level", "info", "the master's log `LEVEL` (its log goes to stderr)")
}

func demoCmd(args []string, stdout, stderr io.Writer) int {
	fs, reloads, logLevel := demoFlagSet()
	err := parseFlags(fs, args)
	if code, ok := helped(stdout, fs, err); ok {
		return code
	}
	if err == nil && (fs.NArg() > 0 || *reloads < 1 || *reloads > 100) {
		err = usagef("demo takes no arguments and 1 to 100 --reloads")
	}
	if err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	lg, err := logging.New(os.Stderr, "auto", *logLevel)
	if err != nil {
		return fail(stderr, fs, usageError{err.Error()}, exitUsage)
	}
	defer lg.Close()
	log := lg.Logger
	exe, err := os.Executable()
	if err != nil {
		return fail(stderr, fs, fmt.Errorf("cannot find the baton binary to run the demo worker: %w", err), exitStartup)
	}
	spec, _ := sockets.ParseSpec("http=tcp://127.0.0.1:0", 0)
	sock, err := sockets.Bind(spec)
	if err != nil {
		return fail(stderr, fs, err, exitStartup)
	}
	defer sock.Close()

	served := make(chan upgrader.Event, 1)
	m, err := upgrader.New(upgrader.Options{
		Command:      []string{exe, demoWorkerArg},
		Sockets:      []*sockets.Socket{sock},
		ReadyTimeout: 10 * time.Second,
		DrainTimeout: 10 * time.Second,
		Log:          log,
		OnEvent: func(e upgrader.Event) {
			if e.Kind == upgrader.ReloadComplete && e.Generation == 1 {
				served <- e
			}
		},
	})
	if err != nil {
		return fail(stderr, fs, err, exitStartup)
	}
	ran := make(chan error, 1)
	go func() { ran <- m.Run() }()
	select {
	case <-served:
	case err := <-ran:
		return fail(stderr, fs, fmt.Errorf("demo master stopped before serving: %v", err), exitStartup)
	}

	url := "http://" + sock.Addr.String() + "/"
	fmt.Fprintf(stdout, "baton demo: master pid %d serves %s; load: 4 loops on new connections, 4 on keep-alive\n", os.Getpid(), url)
	load, err := loadgen.Start(loadgen.Config{URL: url, NewConns: 4, KeepAlive: 4, MaxDuration: time.Minute})
	if err != nil {
		m.StopNow()
		<-ran
		return fail(stderr, fs, err, exitRuntime)
	}
	var took []time.Duration
	failedReload := error(nil)
	for i := 0; i < *reloads && failedReload == nil; i++ {
		<-time.After(demoPace) // let traffic flow between reloads
		r := <-m.Reload(upgrader.TriggerControl)
		if r.Err != nil {
			failedReload = r.Err
			break
		}
		took = append(took, r.Took)
		fmt.Fprintf(stdout, "reload %d: generation %d serving after %s\n", i+1, r.Generation, r.Took.Round(time.Millisecond))
	}
	<-time.After(demoPace)
	sum := load.Stop().Summarize()
	m.Stop()
	runErr := <-ran

	fmt.Fprintf(stdout, "\n%d reloads, %s\n", len(took), sum)
	if len(took) > 0 {
		var total, max time.Duration
		for _, d := range took {
			total += d
			max = durMax(max, d)
		}
		fmt.Fprintf(stdout, "reload time (signal to old generation gone): mean %s, max %s\n",
			(total / time.Duration(len(took))).Round(time.Millisecond), max.Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "the master kept pid %d throughout; try it on your own server:\n", os.Getpid())
	fmt.Fprintln(stdout, "  baton --pidfile /tmp/app.pid --listen http=tcp://127.0.0.1:8080 -- ./my-server")
	switch {
	case failedReload != nil:
		fmt.Fprintf(stderr, "baton: demo reload failed: %v\n", failedReload)
		return exitRuntime
	case runErr != nil:
		fmt.Fprintf(stderr, "baton: demo master: %v\n", runErr)
		return exitRuntime
	case sum.Failed > 0:
		fmt.Fprintf(stderr, "baton: demo saw %d failed requests; please report this\n", sum.Failed)
		return exitRuntime
	}
	return exitOK
}

func durMax(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// demoPace is how long traffic flows before, between and after reloads.
const demoPace = 300 * time.Millisecond

// demoWorker is the bundled worker: an HTTP server on the inherited
// socket that names its generation and PID in every answer.
func demoWorker() int {
	l, err := listener.Listen("http", "tcp", "127.0.0.1:8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo worker:", err)
		return exitRuntime
	}
	gen, pid := listener.Generation(), os.Getpid()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from generation %d pid=%d\n", gen, pid)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if err := listener.ServeHTTP(srv, l); err != nil {
		fmt.Fprintln(os.Stderr, "demo worker:", err)
		return exitRuntime
	}
	return exitOK
}
