// Command baton runs a server as a worker behind a master process with a
// stable PID, and replaces the worker on SIGHUP without refusing or cutting
// a connection. See README.md for the whole story.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	// First of baton's packages to initialise: a process started as a
	// worker's exec shim becomes the worker before the rest of baton
	// (Prometheus, protobuf) has spent time initialising.
	_ "github.com/baton-sh/baton/internal/execshim"
	// A generation's parent stub (--protocol endless or grace), likewise.
	_ "github.com/baton-sh/baton/internal/parentstub"
)

// Exit codes, as in the product contract.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
	exitStartup = 3
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// A worker start never gets here: the exec shim imported below runs
	// during initialisation and execs the worker.
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "reload":
			return reloadCmd(args[1:], stdout, stderr)
		case "status":
			return statusCmd(args[1:], stdout, stderr)
		case "demo":
			return demoCmd(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, "baton", version)
			return exitOK
		case "help":
			fmt.Fprint(stdout, usage)
			return exitOK
		case demoWorkerArg:
			return demoWorker()
		}
	}
	return masterCmd(args, stderr)
}

const usage = `usage:
  baton [flags] -- COMMAND [ARG...]    run COMMAND as the worker
  baton reload  [--pidfile P | --control S] [--wait] [--timeout D]
  baton status  [--pidfile P | --control S] [--json]
  baton demo                           self-contained demonstration
  baton version

Signals to the master: HUP reload · TERM, INT graceful stop · QUIT fast stop ·
USR1, USR2, WINCH forwarded to the current worker.
Exit codes: 0 clean stop · 1 runtime failure · 2 usage error · 3 start-up failure.

master flags:
`

// usageError is a command-line mistake: printed with usage, exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parseFlags parses args with fs, treating -h as a request for usage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// fail prints err as one line and returns the exit code it deserves.
func fail(stderr io.Writer, fs *flag.FlagSet, err error, code int) int {
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stderr, fs)
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "baton: %s\n", ue.msg)
		printUsage(stderr, fs)
		return exitUsage
	}
	fmt.Fprintf(stderr, "baton: %s\n", err)
	return code
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	if fs.Name() == "baton" {
		fmt.Fprint(w, usage)
	} else {
		fmt.Fprintf(w, "usage of baton %s:\n", fs.Name())
	}
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
