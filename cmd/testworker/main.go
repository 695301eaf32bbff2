// Command testworker is the worker baton's integration tests and demos run:
// a small HTTP server (and, with -udp, a datagram echo) on the listener
// API whose misbehaviour (failing at start, never becoming ready, ignoring
// the drain signal, leaving orphans, daemonizing, leaving its process
// group, notifying from a short-lived helper, flooding the notify socket,
// going silent to the watchdog, growing, failing its health check) is
// chosen by flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-sh/baton/listener"
	"github.com/baton-sh/baton/notify"
)

func main() {
	var (
		name        = flag.String("name", "http", "inherited socket name")
		addr        = flag.String("addr", "127.0.0.1:8080", "address to bind when started without baton")
		failAtStart = flag.Bool("fail-at-start", false, "exit 1 before serving")
		neverReady  = flag.Bool("never-ready", false, "serve and drain, but never send READY=1")
		readyAfter  = flag.Duration("ready-after", 0, "wait this long before serving")
		ignoreDrain = flag.Bool("ignore-drain", false, "ignore SIGTERM (drain only by SIGKILL)")
		orphan      = flag.Bool("orphan", false, "leave a grandchild process (sleep) re-parented away from us")
		failFile    = flag.String("fail-if-exists", "", "exit 1 at start if this file exists")
		udp         = flag.String("udp", "", "also echo datagrams on the inherited socket of this name")
		crashAfter  = flag.Duration("crash-after", 0, "exit 1 this long after becoming ready, once it has answered what it has in flight, as on its drain signal (a release that dies on probation; what its own death would cut is not baton's to save, so a test counts only what baton loses); with -crash-if-exists: only if that file exists at start")
		crashFile   = flag.String("crash-if-exists", "", "see -crash-after")
		shutdown    = flag.Bool("shutdown-on-drain", false, "shutdown(2) the inherited listening socket on the drain signal, as old HAProxy did")
		status      = flag.String("status", "", "send this STATUS= text to baton before READY=1")
		daemonize   = flag.Bool("daemonize", false, "detach like a classic daemon (fork, setsid, fork; the main process exits 0 before it is ready) and serve from the detached process; with -ignore-drain it ignores SIGTERM")
		idleThreads = flag.Int("idle-threads", 0, "start this many OS threads that block forever, before anything else (a server with a big thread pool)")
		busyStart   = flag.Bool("busy-start", false, "keep a thread busy on the CPU during -ready-after (a server loading), instead of sleeping")
		linger      = flag.Bool("linger", false, "after draining, stay alive (ignoring the drain signal) until killed, as a worker stuck in its shutdown does")
		extend      = flag.Duration("extend-timeout", 0, "at start, before -ready-after's wait, ask for this much more time to start (EXTEND_TIMEOUT_USEC=)")
		onlyIf      = flag.String("only-if-exists", "", "-watchdog-stop-after, -grow-mb-per-s and -healthz-500-after apply only if this file exists at start")
		wdStop      = flag.Duration("watchdog-stop-after", 0, "stop sending WATCHDOG=1 this long after becoming ready (0: never), while still serving")
		growMB      = flag.Int("grow-mb-per-s", 0, "while serving, take this many MB more resident memory every second")
		bad500      = flag.Duration("healthz-500-after", -1, "answer 500 on /healthz from this long after becoming ready on (0: at once; negative: never)")
		leaveGroup  = flag.Bool("leave-group", false, "move to another process group (setpgid) before serving, out of the one baton started it in")
		helperReady = flag.Bool("ready-by-helper", false, "say READY=1 from a short-lived child process (it sends and exits), never from itself")
		flood       = flag.Int("notify-flood", 0, "once serving, send this many STOPPING=1 and as many malformed datagrams on NOTIFY_SOCKET, the last two a second after the others")
		chat        chatter
	)
	flag.IntVar(&chat.say, "say", 0, "print this many numbered lines on stdout and on stderr at start")
	flag.DurationVar(&chat.tick, "tick", 0, "print a numbered tick on stdout and tock on stderr at this interval, each line in two writes")
	flag.IntVar(&chat.flood, "flood", 0, "print this many 100-byte lines a second on stdout; GET /flooded says how many were written and the longest write")
	flag.IntVar(&chat.drainSay, "say-on-drain", 0, "on the drain signal, print this many lines on stderr 20ms apart, then say it exits cleanly just before it does")
	if msg, ok := os.LookupEnv(notifyHelper); ok {
		// The helper of -ready-by-helper: one datagram, then gone.
		if err := notify.Send(msg); err != nil {
			fmt.Fprintln(os.Stderr, "testworker: helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	flag.Parse()
	idle(*idleThreads)
	if *failAtStart || (*failFile != "" && exists(*failFile)) {
		fmt.Fprintln(os.Stderr, "testworker: failing at start as asked")
		os.Exit(1)
	}
	if *daemonize {
		daemon(*ignoreDrain)
	}
	if *onlyIf != "" && !exists(*onlyIf) {
		*wdStop, *growMB, *bad500 = 0, 0, -1
	}
	if *extend > 0 {
		notify.Send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(extend.Microseconds(), 10))
	}
	if *leaveGroup {
		leave()
	}
	if *busyStart {
		for start := time.Now(); time.Since(start) < *readyAfter; {
		}
	} else {
		time.Sleep(*readyAfter)
	}

	l, err := listener.Listen(*name, "tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(1)
	}
	if *status != "" {
		listener.Status(*status)
	}
	if *orphan {
		// sh exits at once; its sleep is re-parented to the nearest
		// subreaper or to init.
		exec.Command("sh", "-c", "sleep 300 >/dev/null 2>&1 &").Run()
	}

	gen := strconv.Itoa(listener.Generation())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "gen=%s pid=%d\n", gen, os.Getpid())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		// Tests wait for this line to know the request is in flight.
		fmt.Fprintf(os.Stderr, "testworker: slow request started pid=%d\n", os.Getpid())
		time.Sleep(d)
		fmt.Fprintf(w, "slow done after %s gen=%s pid=%d\n", d, gen, os.Getpid())
	})
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strconv.Itoa(os.Getpid())))
	})
	readyAt := time.Now()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if *bad500 >= 0 && time.Since(readyAt) >= *bad500 {
			http.Error(w, "unhealthy as asked", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	chat.handle(mux)

	notifySocket := os.Getenv("NOTIFY_SOCKET")
	if *neverReady || *helperReady {
		// It serves and drains like any worker, but never says so.
		os.Unsetenv("NOTIFY_SOCKET")
	}
	if *helperReady && notifySocket != "" {
		readyByHelper(notifySocket)
	}
	if *flood > 0 && notifySocket != "" {
		go floodNotify(notifySocket, *flood)
	}
	drain := []os.Signal{syscall.SIGTERM}
	if *ignoreDrain {
		signal.Ignore(syscall.SIGTERM)
		drain = []os.Signal{syscall.SIGUSR2}
	}
	echoed := make(chan struct{})
	if *udp != "" {
		c, err := listener.ListenPacket(*udp, "udp", "127.0.0.1:8053")
		if err != nil {
			fmt.Fprintln(os.Stderr, "testworker:", err)
			os.Exit(1)
		}
		go echo(c, gen, signalled(drain), echoed)
	} else {
		close(echoed)
	}
	var crashing atomic.Bool
	if *crashAfter > 0 && (*crashFile == "" || exists(*crashFile)) {
		sig := drain[0].(syscall.Signal)
		go func() {
			time.Sleep(*crashAfter)
			fmt.Fprintln(os.Stderr, "testworker: crashing after ready as asked")
			crashing.Store(true)
			syscall.Kill(os.Getpid(), sig)
		}()
	}
	if *shutdown {
		// shutdown(2) acts on the socket itself, which every generation
		// shares; close(2) would only drop this process's reference. The
		// drain proper starts once it is done.
		term := signalled(drain)
		drain = []os.Signal{syscall.SIGUSR1}
		go func() {
			<-term
			if rc, err := l.(*net.TCPListener).SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
			}
			syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		}()
	}
	chat.start(drain)
	draining := make(chan struct{})
	drainSeen := signalled(drain)
	go func() {
		<-drainSeen
		close(draining)
	}()
	go watchdog(*wdStop, draining)
	if *growMB > 0 {
		go grow(*growMB, draining)
	}
	if err := listener.ServeHTTP(srv, l, drain...); err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(1)
	}
	<-echoed
	if crashing.Load() {
		os.Exit(1)
	}
	if *growMB > 0 {
		// Tests read how big it got before it was replaced.
		fmt.Fprintf(os.Stderr, "testworker: exiting pid=%d peak_rss_kb=%d\n", os.Getpid(), peakRSS())
	}
	if *linger {
		signal.Ignore(drain...)
		fmt.Fprintf(os.Stderr, "testworker: drained, lingering pid=%d\n", os.Getpid())
		select {}
	}
	chat.finish()
}

// watchdog sends WATCHDOG=1 every half of WATCHDOG_USEC, as systemd asks
// of a service with WatchdogSec=, while WATCHDOG_PID (if set) is this
// process, until stopAfter has passed (0: for as long as it serves).
func watchdog(stopAfter time.Duration, draining <-chan struct{}) {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return // meant for another process
	}
	tick := time.NewTicker(time.Duration(usec) * time.Microsecond / 2)
	defer tick.Stop()
	var stop <-chan time.Time
	if stopAfter > 0 {
		stop = time.After(stopAfter)
	}
	for {
		select {
		case <-tick.C:
			notify.Send("WATCHDOG=1")
		case <-stop:
			fmt.Fprintf(os.Stderr, "testworker: silent to the watchdog from now on, still serving pid=%d\n", os.Getpid())
			return
		case <-draining:
			return
		}
	}
}

// grow maps mb MB of fresh memory a second, faulted in at once so that it
// is resident, in tenths every 100ms, until the drain begins: a leak that
// grows with the requests a worker serves. The memory is mapped (and never
// unmapped) rather than allocated, so that neither the garbage collector
// nor the race detector's shadow memory changes how much it is.
func grow(mb int, draining <-chan struct{}) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	step := mb << 20 / 10
	for {
		select {
		case <-tick.C:
			_, err := syscall.Mmap(-1, 0, step, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_POPULATE)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testworker: grow:", err)
				return
			}
		case <-draining:
			return
		}
	}
}

// peakRSS is this process's peak resident memory (VmHWM), in kB.
func peakRSS() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// echo answers each datagram with "gen=G pid=P " and the datagram, until
// drain closes. Draining stops the reading, not the socket: the datagram
// in hand is still answered, and those not read yet stay queued on the
// shared socket for the next generation.
func echo(c net.PacketConn, gen string, drain <-chan os.Signal, done chan<- struct{}) {
	defer close(done)
	go func() {
		<-drain
		c.SetReadDeadline(time.Now())
	}()
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				fmt.Fprintln(os.Stderr, "testworker: udp:", err)
			}
			c.Close()
			return
		}
		c.WriteTo(fmt.Appendf(nil, "gen=%s pid=%d %s", gen, os.Getpid(), buf[:n]), from)
	}
}

// signalled is notified of sigs from now on, so a drain signal that comes
// as soon as the worker is ready is not missed.
func signalled(sigs []os.Signal) <-chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, sigs...)
	return c
}

// idle starts n OS threads, each blocked for good on a channel, and
// returns once all of them run: the thread pool of a big server, which
// --ready accepting must look past.
func idle(n int) {
	started := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread() // the goroutine's thread is its own until it ends
			started <- struct{}{}
			select {}
		}()
	}
	for range n {
		<-started
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// daemonStage tells a re-executed testworker which step of daemonizing it
// is: Go cannot fork without exec, so each fork is a re-exec of itself.
const daemonStage = "TESTWORKER_DAEMON_STAGE"

// daemon detaches the way a classic Unix daemon does: the main process
// starts a child in a new session (fork, setsid) and exits 0; that child
// starts the daemon (fork) and exits in turn; the daemon serves HTTP on
// fd 3, the inherited socket, and never says it is ready. Each process
// exits only once the next one is up (and, with ignoreDrain, ignores
// SIGTERM: a Go program cannot inherit that), so the daemon is running by
// the time baton sees the main process exit. It does not return.
func daemon(ignoreDrain bool) {
	if ignoreDrain {
		signal.Ignore(syscall.SIGTERM)
	}
	switch os.Getenv(daemonStage) {
	case "":
		startSelf("session", true)
		fmt.Fprintf(os.Stderr, "testworker: daemonized pid=%d\n", os.Getpid())
		os.Exit(0)
	case "session":
		startSelf("daemon", false)
		os.NewFile(4, "up").Write([]byte{1})
		os.Exit(0)
	}
	l, err := net.FileListener(os.NewFile(3, "socket"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker: daemon:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "testworker: daemon serving pid=%d\n", os.Getpid())
	os.NewFile(4, "up").Write([]byte{1})
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "daemon pid=%d\n", os.Getpid())
	}))
	os.Exit(1)
}

// startSelf starts this program again at the given daemonizing stage, with
// the socket as fd 3 and a pipe as fd 4, and returns once it has written a
// byte on the pipe to say it is up.
func startSelf(stage string, setsid bool) {
	exe, err := os.Executable()
	var r, w *os.File
	if err == nil {
		r, w, err = os.Pipe()
	}
	if err == nil {
		cmd := exec.Command(exe, os.Args[1:]...)
		cmd.Env = append(os.Environ(), daemonStage+"="+stage)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.ExtraFiles = []*os.File{os.NewFile(3, "socket"), w}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
		err = cmd.Start()
		w.Close()
	}
	if err == nil {
		_, err = r.Read(make([]byte, 1))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker: daemonize:", err)
		os.Exit(1)
	}
}

// leave moves this process out of the process group baton started it in.
// It leads that group, so setpgid(0, 0) would change nothing: it starts a
// helper in a group of its own, joins that group, and ends the helper.
// Only this process is left in either group.
func leave() {
	helper := exec.Command("sleep", "60")
	helper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := helper.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testworker: leave-group:", err)
		os.Exit(1)
	}
	err := syscall.Setpgid(0, helper.Process.Pid)
	helper.Process.Kill()
	helper.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker: leave-group:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "testworker: left my process group pid=%d pgid=%d\n", os.Getpid(), syscall.Getpgrp())
}

// notifyHelper, in a re-executed testworker's environment, makes it the
// helper of -ready-by-helper: it sends the variable's value and exits.
const notifyHelper = "TESTWORKER_NOTIFY_HELPER"

// readyByHelper has a child process send READY=1 to addr and waits for it
// to exit: the datagram comes from a process that is gone by the time the
// receiver may look at who sent it, as systemd-notify's is.
func readyByHelper(addr string) {
	exe, err := os.Executable()
	if err == nil {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+addr, notifyHelper+"=READY=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err = cmd.Run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker: ready-by-helper:", err)
		os.Exit(1)
	}
}

// floodNotify sends n STOPPING=1 and n malformed datagrams to addr, each
// waiting for room in the receiver's queue, so that every one arrives;
// then, more than a second later, one more of each.
func floodNotify(addr string, n int) {
	c, err := net.Dial("unixgram", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker: notify-flood:", err)
		return
	}
	defer c.Close()
	for i := range 2 * n {
		msg := "STOPPING=1"
		if i%2 == 1 {
			msg = "not a notify line"
		}
		if i == 2*n-2 {
			time.Sleep(1100 * time.Millisecond)
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			fmt.Fprintln(os.Stderr, "testworker: notify-flood:", err)
			return
		}
	}
	fmt.Fprintf(os.Stderr, "testworker: notify flood sent %d datagrams pid=%d\n", 2*n, os.Getpid())
}
