// Package serverhints owns what baton knows of classic servers whose
// graceful stop is not on baton's default drain signal: from a worker's
// command line and the drain signal, it tells the mistakes that cut
// requests in flight, or that leave a generation unable to serve, while
// every reload still looks fine. It knows only servers whose behaviour the
// recipes of docs/servers.md measured, recognised by the program's base
// name, and says nothing of any other command.
package serverhints

import (
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// server is one recognised program and the signals it treats as a stop
// that cuts what is in flight.
type server struct {
	names  []string                  // base names of the program
	title  string                    // how a line names it
	brutal map[syscall.Signal]string // signal → the stop it means to the server
	fix    string                    // how to drain it gracefully instead
	extra  func(args []string, drain syscall.Signal) []string
}

var servers = []server{
	{
		names: []string{"uwsgi", "uwsgi-core"},
		title: "uWSGI",
		brutal: map[syscall.Signal]string{
			syscall.SIGTERM: "a brutal reload",
			syscall.SIGINT:  "a brutal stop",
			syscall.SIGQUIT: "a brutal stop",
		},
		fix:   "pass --drain-signal HUP and give uwsgi --exit-on-reload: its graceful reload, ending in an exit",
		extra: uwsgiExtra,
	},
	{
		names: []string{"unicorn", "unicorn_rails"},
		title: "unicorn",
		brutal: map[syscall.Signal]string{
			syscall.SIGTERM: "its quick stop",
			syscall.SIGINT:  "its quick stop",
		},
		fix: "pass --drain-signal QUIT, its graceful stop",
	},
	{
		names: []string{"nginx"},
		title: "nginx",
		brutal: map[syscall.Signal]string{
			syscall.SIGTERM: "its fast stop",
			syscall.SIGINT:  "its fast stop",
		},
		fix: "pass --drain-signal QUIT, its graceful stop",
	},
	{
		names: []string{"haproxy"},
		title: "HAProxy",
		brutal: map[syscall.Signal]string{
			syscall.SIGTERM: "its hard stop",
			syscall.SIGINT:  "its hard stop",
		},
		fix: "pass --drain-signal USR1, its soft stop",
	},
	{
		names: []string{"gunicorn"},
		title: "gunicorn",
		brutal: map[syscall.Signal]string{
			syscall.SIGINT:  "its quick stop",
			syscall.SIGQUIT: "its quick stop",
		},
		fix: "pass --drain-signal TERM (the default), its graceful stop",
	},
}

// Warnings returns one line for each mistake it recognises in running
// argv as baton's worker with drain as the drain signal, each saying what
// goes wrong and what to pass instead; nil when it recognises none. It
// looks through `env [NAME=VALUE…]`, `bundle exec` and `nonblock` to the
// program they run, reads nothing but its arguments, and has no side
// effects.
func Warnings(argv []string, drain syscall.Signal) []string {
	argv = program(argv)
	if len(argv) == 0 {
		return nil
	}
	base := filepath.Base(argv[0])
	for _, s := range servers {
		if !slices.Contains(s.names, base) {
			continue
		}
		var out []string
		if what, ok := s.brutal[drain]; ok {
			out = append(out, s.title+" takes "+name(drain)+" as "+what+", which cuts the requests in flight: "+s.fix)
		}
		if s.extra != nil {
			out = append(out, s.extra(argv[1:], drain)...)
		}
		return out
	}
	return nil
}

// uwsgiExtra: on HUP uWSGI execs itself anew unless told to exit, and
// an address given to --http-socket beside the socket baton passes leaves
// that socket to the uwsgi protocol.
func uwsgiExtra(args []string, drain syscall.Signal) []string {
	var out []string
	if drain == syscall.SIGHUP && !hasConfigFile(args) && !anyContains(args, "exit-on-reload") {
		out = append(out, "uWSGI takes HUP as a graceful reload: once drained it starts itself anew "+
			"instead of exiting; give uwsgi --exit-on-reload")
	}
	for i := range args {
		if v, ok := optionValue(args, i, "--http-socket"); ok && !strings.HasPrefix(v, "fd://") {
			out = append(out, "uWSGI serves baton's socket (fd 3) as a second socket, in the uwsgi protocol, "+
				"besides --http-socket "+v+": HTTP requests to baton's address fail; "+
				"drop --http-socket and pass --protocol http")
			break
		}
	}
	return out
}

// program skips the wrappers that exec the program they are given: env,
// bundle exec, and nonblock from baton's nginx recipe
// (examples/nginx/nonblock).
func program(argv []string) []string {
	for len(argv) > 0 {
		switch base := filepath.Base(argv[0]); {
		case base == "env":
			argv = skipEnvArgs(argv[1:])
		case base == "nonblock":
			argv = argv[1:]
		case base == "bundle" && len(argv) > 1 && argv[1] == "exec":
			argv = argv[2:]
		default:
			return argv
		}
	}
	return argv
}

// skipEnvArgs skips env's options and NAME=VALUE assignments.
func skipEnvArgs(args []string) []string {
	for len(args) > 0 {
		a := args[0]
		switch {
		case a == "-u" || a == "--unset" || a == "-C" || a == "--chdir":
			args = args[min(2, len(args)):]
		case a == "--":
			return args[1:]
		case strings.HasPrefix(a, "-") || strings.Contains(a, "="):
			args = args[1:]
		default:
			return args
		}
	}
	return args
}

// hasConfigFile reports whether uWSGI is given a configuration file, whose
// options this package cannot see.
func hasConfigFile(args []string) bool {
	for _, a := range args {
		for _, opt := range []string{"--ini", "--yaml", "--yml", "--json", "--xml", "--include"} {
			if a == opt || strings.HasPrefix(a, opt+"=") {
				return true
			}
		}
		if !strings.HasPrefix(a, "-") {
			switch filepath.Ext(a) {
			case ".ini", ".yaml", ".yml", ".json", ".xml":
				return true
			}
		}
	}
	return false
}

// optionValue returns the value of option at args[i], given as
// "--opt VALUE" or "--opt=VALUE".
func optionValue(args []string, i int, option string) (string, bool) {
	a := args[i]
	if v, ok := strings.CutPrefix(a, option+"="); ok {
		return v, true
	}
	if a == option && i+1 < len(args) {
		return args[i+1], true
	}
	return "", false
}

func anyContains(args []string, s string) bool {
	for _, a := range args {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

// name is the signal's name without SIG, as --drain-signal takes it.
func name(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return strings.TrimPrefix(n, "SIG")
	}
	return s.String()
}
