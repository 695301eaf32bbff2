package main

import (
	"flag"
	"fmt"
	"io"
	"syscall"

	"github.com/baton-sh/baton/pidfile"
)

// reloadCmd asks a running master for a reload.
func reloadCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	pidPath := fs.String("pidfile", "", "the master's pidfile")
	if err := parseFlags(fs, args); err != nil {
		return fail(stderr, fs, err, exitUsage)
	}
	if *pidPath == "" {
		return fail(stderr, fs, usagef("reload needs --pidfile"), exitUsage)
	}
	pid, err := pidfile.Read(*pidPath)
	if err != nil {
		return fail(stderr, fs, fmt.Errorf("cannot find the master: %w", err), exitRuntime)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fail(stderr, fs, fmt.Errorf("cannot signal master pid %d: %w", pid, err), exitRuntime)
	}
	fmt.Fprintf(stdout, "reload requested from master pid %d\n", pid)
	return exitOK
}

func statusCmd(args []string, stdout, stderr io.Writer) int {
	return fail(stderr, flag.NewFlagSet("status", flag.ContinueOnError), usagef("status: not available yet"), exitUsage)
}
