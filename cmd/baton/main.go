// Command baton runs a server as a worker behind a master process with a
// stable PID, and replaces the worker on SIGHUP without refusing or cutting
// a connection. See README.md for the whole story.
//
// It owns the command line and the wiring: the master's flags become
// upgrader.Options (master.go), with the sockets, pidfile, control socket,
// admin endpoint and privileges it holds for the engine; its other
// commands (reload, status, scale, upgrade) drive a running master
// through its control socket (client.go, upgrade.go); demo shows it off.
// The same binary is the master's re-exec helpers (exec shim, parent
// stub, keeper) and a new image's upgrade check, each chosen at the top
// of main.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/host"
	"github.com/baton-sh/baton/internal/reexec"
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
	// The master starts its own binary as a worker's exec shim, a
	// generation's parent stub and its keeper: such a process is that
	// helper, never baton's command line.
	if reexec.Init() {
		return
	}
	// A master upgrading in place runs its new binary so first, with its
	// own arguments, to see that it can take over.
	if os.Getenv(envnames.UpgradeCheck) != "" {
		os.Exit(upgradeCheck(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	go func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }()
	// The main thread forks every worker and executes an in-place
	// upgrade: see host.ServeMainThread.
	host.ServeMainThread()
}

// The main goroutine keeps the main thread: see host.ServeMainThread.
func init() { runtime.LockOSThread() }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "reload":
			return reloadCmd(args[1:], stdout, stderr)
		case "status":
			return statusCmd(args[1:], stdout, stderr)
		case "scale":
			return scaleCmd(args[1:], stdout, stderr)
		case "demo":
			return demoCmd(args[1:], stdout, stderr)
		case "version":
			return versionCmd(args[1:], stdout, stderr)
		case "help":
			return helpCmd(args[1:], stdout, stderr)
		case "upgrade":
			return upgradeCmd(args[1:], stdout, stderr)
		case demoWorkerArg:
			return demoWorker()
		}
	}
	return masterCmd(args, stdout, stderr)
}

// subcommands are the words baton takes as its first argument, those the
// product promises but this build lacks included: a word near one of
// them is a misspelling, never a worker command.
var subcommands = []string{"reload", "status", "scale", "upgrade", "demo", "version", "help"}

// notACommand is the usage error for a bare word where a subcommand or a
// flag was expected: the subcommand it is closest to, or else where a
// worker command goes.
func notACommand(word string) error {
	if guesses := closest(word, subcommands); len(guesses) > 0 {
		return usagef("%q is not a command (a worker command goes after --): did you mean %s?", word, orList("baton ", guesses))
	}
	return usagef("%q is not a command: put the worker command after --, e.g. baton --listen tcp://127.0.0.1:8080 -- ./server", word)
}

// synopses are the first lines of each command's usage.
var synopses = map[string]string{
	"baton":   "baton [flags] -- COMMAND [ARG...]      run COMMAND as the worker",
	"reload":  "baton reload  [--pidfile P | --control S] [--wait] [--timeout D]",
	"status":  "baton status  [--pidfile P | --control S] [--json]",
	"scale":   "baton scale N [--pidfile P | --control S] [--wait] [--timeout D]",
	"upgrade": "baton upgrade [--pidfile P | --control S] [--wait] [--timeout D]",
	"demo":    "baton demo    [--reloads N]           self-contained demonstration",
}

const usageHead = `usage:
  %s
  %s
  %s
  %s
  %s
  %s
  baton version                          the version and the revision it was built from
  baton help    [reload | status | scale | upgrade | demo]

Signals to the master: HUP reload · TERM, INT graceful stop · QUIT fast stop ·
USR1, USR2, WINCH forwarded to every serving worker · TTIN, TTOU one worker more, fewer.
Exit codes: 0 clean stop · 1 runtime failure · 2 usage error · 3 start-up failure.

master flags:
`

// helpCmd prints the usage of baton, or of the command named.
func helpCmd(args []string, stdout, stderr io.Writer) int {
	var fs *flag.FlagSet
	switch {
	case len(args) == 0:
		fs = masterFlagSet(&masterFlags{})
	case len(args) == 1 && args[0] == "reload":
		fs, _, _ = reloadFlagSet(&masterAddress{})
	case len(args) == 1 && args[0] == "status":
		fs, _ = statusFlagSet(&masterAddress{})
	case len(args) == 1 && args[0] == "scale":
		fs, _, _ = scaleFlagSet(&masterAddress{})
	case len(args) == 1 && args[0] == "demo":
		fs, _, _ = demoFlagSet()
	case len(args) == 1 && args[0] == "upgrade":
		fs, _, _ = upgradeFlagSet(&masterAddress{})
	default:
		fmt.Fprintf(stderr, "baton: help %s: no such command: want reload, status, scale, upgrade or demo (baton --help lists every flag)\n", strings.Join(args, " "))
		return exitUsage
	}
	printUsage(stdout, fs)
	return exitOK
}

// versionCmd prints the version set at link time, or else the module
// version Go recorded, and the VCS revision the binary was built from.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "baton: version takes no arguments (baton --help lists every command)")
		return exitUsage
	}
	fmt.Fprintln(stdout, versionString())
	return exitOK
}

func versionString() string {
	v, rev, modified, built := version, "", false, ""
	info, ok := debug.ReadBuildInfo()
	if ok {
		if v == "dev" && info.Main.Version != "" {
			v = info.Main.Version // "(devel)" when Go knew nothing better
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			case "vcs.time":
				built = s.Value
			}
		}
	}
	out := "baton " + v
	if rev != "" {
		out += ", revision " + rev
		if modified {
			out += " with local changes"
		}
		if built != "" {
			out += " of " + built
		}
	}
	if ok {
		out += ", " + info.GoVersion
	}
	return out
}

// usageError is a command-line mistake: one line, exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parseFlags parses args with fs. It returns flag.ErrHelp for -h, -help
// and --help, and a usageError in baton's words for every other mistake.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return flagError(fs, err)
}

// flagError rewrites the flag package's errors, which write flags with one
// dash, into one line that names the flag as users type it and, for a
// misspelt flag, the ones they probably meant.
func flagError(fs *flag.FlagSet, err error) usageError {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + name
		var flags []string
		fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f.Name) })
		if guesses := closest(name, flags); len(guesses) > 0 {
			msg += ": did you mean " + orList("--", guesses) + "?"
		}
		return usageError{msg}
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return usageError{"flag --" + name + " needs a value"}
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		value, name := m[1], m[2]
		want := "a valid value"
		if f := fs.Lookup(name); f != nil {
			switch f.Value.(flag.Getter).Get().(type) {
			case time.Duration:
				want = "a duration such as 30s or 2m"
			case int:
				want = "a whole number"
			case bool:
				want = "true or false"
			}
		}
		return usageError{fmt.Sprintf("--%s %s: want %s", name, value, want)}
	}
	return usageError{msg}
}

// badValue matches the flag package's "invalid value" errors.
var badValue = regexp.MustCompile(`^invalid (?:boolean )?value ("(?:[^"\\]|\\.)*") for (?:flag )?-([a-zA-Z0-9-]+):`)

// closest are the names nearest to name: the one within two edits, or
// else those that name begins (at most three).
func closest(name string, names []string) []string {
	best, bestDist := "", 3
	var prefixed []string
	for _, n := range names {
		if d := editDistance(name, n); d < bestDist {
			best, bestDist = n, d
		}
		if len(name) >= 2 && strings.HasPrefix(n, name) {
			prefixed = append(prefixed, n)
		}
	}
	switch {
	case best != "":
		return []string{best}
	case len(prefixed) <= 3:
		return prefixed
	}
	return nil
}

// orList writes names, each after prefix, as "a", "a or b", "a, b or c".
func orList(prefix string, names []string) string {
	last := len(names) - 1
	alts := prefix + names[last]
	if last > 0 {
		alts = prefix + strings.Join(names[:last], ", "+prefix) + " or " + alts
	}
	return alts
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// fail prints err as one line and returns the exit code it deserves: 2
// for a usage error, which also points at the command's --help.
func fail(stderr io.Writer, fs *flag.FlagSet, err error, code int) int {
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "baton: %s (%s --help lists every flag)\n", ue.msg, commandName(fs))
		return exitUsage
	}
	fmt.Fprintf(stderr, "baton: %s\n", err)
	return code
}

// helped handles a request for help from parseFlags: the usage on
// stdout, exit 0.
func helped(stdout io.Writer, fs *flag.FlagSet, err error) (int, bool) {
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, fs)
		return exitOK, true
	}
	return 0, false
}

func commandName(fs *flag.FlagSet) string {
	if fs.Name() == "baton" {
		return "baton"
	}
	return "baton " + fs.Name()
}

// printUsage prints a command's synopsis and every flag, written with two
// dashes as users type them (the flag package would print one).
func printUsage(w io.Writer, fs *flag.FlagSet) {
	if fs.Name() == "baton" {
		fmt.Fprintf(w, usageHead, synopses["baton"], synopses["reload"], synopses["status"], synopses["scale"], synopses["upgrade"], synopses["demo"])
	} else {
		fmt.Fprintf(w, "usage:\n  %s\n\nflags:\n", synopses[fs.Name()])
	}
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		switch f.DefValue {
		case "", "0", "0s", "false":
		default:
			help += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "%s\n      %s\n", line, help)
	})
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
