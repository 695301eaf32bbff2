// Package envfile owns the part of a worker's environment that the
// operator sets: files in the syntax of systemd's EnvironmentFile=
// (--env-file) and single NAME=VALUE settings (--env), applied in that
// order over a base environment, with the names baton sets for its
// workers kept out of reach.
//
// A file that systemd reads without complaint gives here exactly the
// variables systemd gives. Where systemd only logs and goes on, this
// package refuses the file with an error naming it and the line: an
// assignment whose name is not a valid variable name ("export FOO=1",
// "DATABASE-URL=…", which systemd drops with a journal warning), a quote
// that is never closed (systemd takes the rest of the file as the value),
// and text that is not UTF-8 or holds a NUL byte (which systemd refuses
// too).
package envfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// Var is one assignment and where it was made.
type Var struct {
	Name, Value string
	// Source is "PATH:LINE" for a file (the line its name is on) or
	// "--env" for a setting.
	Source string
}

// File is one --env-file argument.
type File struct {
	Path string
	// Optional files ("-PATH", as in systemd) that do not exist add
	// nothing; any other failure to read one is still an error.
	Optional bool
}

// ParseFile reads an --env-file argument: PATH, or -PATH for a file that
// may be missing.
func ParseFile(arg string) (File, error) {
	f := File{Path: arg}
	if p, ok := strings.CutPrefix(arg, "-"); ok {
		f = File{Path: p, Optional: true}
	}
	if f.Path == "" {
		return File{}, fmt.Errorf("--env-file %q: want PATH, or -PATH for a file that may be missing", arg)
	}
	return f, nil
}

// String is the argument f was parsed from.
func (f File) String() string {
	if f.Optional {
		return "-" + f.Path
	}
	return f.Path
}

// MaxFileSize is the largest environment file Read accepts. The kernel
// passes a new process at most a few MiB of arguments and environment
// together (a quarter of the stack limit), so a bigger file could never
// reach a worker whole.
const MaxFileSize = 1 << 20

// MaxVarSize is the longest NAME=VALUE the kernel passes to a new
// process (MAX_ARG_STRLEN, 32 pages, counting the terminating NUL).
const MaxVarSize = 128 << 10

// Read reads and parses the file. A missing optional file gives no
// assignments and no error.
//
// Read never blocks on what the path names and reads at most
// MaxFileSize+1 bytes: only a regular file is read; a named pipe, a
// device such as /dev/zero, a socket or a directory is an error saying
// so, as is a file larger than MaxFileSize.
func (f File) Read() ([]Var, error) {
	b, err := f.readRegular()
	var bad badFile
	switch {
	case errors.As(err, &bad):
		return nil, fmt.Errorf("env file %s %s", f.Path, bad)
	case err == nil:
		return Parse(f.Path, b)
	case f.Optional && errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("env file %s does not exist (--env-file -%s would make it optional)", f.Path, f.Path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return nil, fmt.Errorf("env file %s: %w", f.Path, err)
}

// readRegular reads f.Path if it is a regular file of at most
// MaxFileSize bytes. O_NONBLOCK keeps the open of a named pipe from
// waiting for a writer; the file type is checked on what was opened, so
// a path replaced meanwhile cannot slip a pipe or device through.
func (f File) readRegular() ([]byte, error) {
	fd, err := syscall.Open(f.Path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: f.Path, Err: err}
	}
	file := os.NewFile(uintptr(fd), f.Path)
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, badFile(fmt.Sprintf("is %s, not a regular file: baton reads it anew for every generation, so give a file", kind(st.Mode())))
	}
	if st.Size() > MaxFileSize {
		return nil, badFile(fmt.Sprintf("is %d bytes; an environment file is at most %d (1 MiB)", st.Size(), MaxFileSize))
	}
	b, err := io.ReadAll(io.LimitReader(file, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize { // it grew since the stat
		return nil, badFile(fmt.Sprintf("is more than %d bytes; an environment file is at most %d (1 MiB)", MaxFileSize, MaxFileSize))
	}
	return b, nil
}

// badFile says what is wrong with a file that could be read: the rest of
// a sentence whose subject is the file.
type badFile string

func (b badFile) Error() string { return string(b) }

// kind names what a file that is not a regular file is.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file"
}

// ParseSetting reads an --env argument, NAME=VALUE. The value is taken as
// it is, without quotes or escapes: the shell has had its turn.
func ParseSetting(arg string) (Var, error) {
	name, value, ok := strings.Cut(arg, "=")
	if !ok {
		return Var{}, fmt.Errorf("--env %s: want NAME=VALUE", clip(arg))
	}
	if !ValidName(name) {
		return Var{}, fmt.Errorf("--env %s: %s is not a variable name (letters, digits and _, not starting with a digit)", clip(arg), clip(name))
	}
	if len(arg) >= MaxVarSize {
		return Var{}, fmt.Errorf("--env %s: %d bytes; the kernel passes a variable of at most %d", name, len(arg), MaxVarSize-1)
	}
	return Var{Name: name, Value: value, Source: "--env"}, nil
}

// ValidName reports whether name is a valid environment variable name as
// systemd sees it: ASCII letters, digits and underscores, not empty, not
// starting with a digit.
func ValidName(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// reservedPrefixes and reservedNames are baton's own variables: the
// sockets (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), readiness
// (NOTIFY_SOCKET), the watchdog (WATCHDOG_USEC, WATCHDOG_PID) and baton's
// own (BATON_GENERATION, BATON_WORKER_INDEX, the exec shim's, …).
var (
	reservedPrefixes = []string{"LISTEN_", "BATON_", "WATCHDOG_"}
	reservedNames    = []string{"NOTIFY_SOCKET"}
)

// Reserved reports whether baton sets the variable name for its workers,
// so that neither --env nor --env-file may.
func Reserved(name string) bool {
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	for _, n := range reservedNames {
		if name == n {
			return true
		}
	}
	return false
}

// Environment is what --env-file and --env add to a worker's environment.
type Environment struct {
	// Files are read anew, in this order, at every Build.
	Files []File
	// Settings apply after every file, in this order.
	Settings []Var
}

// IsZero reports whether e adds nothing.
func (e Environment) IsZero() bool { return len(e.Files) == 0 && len(e.Settings) == 0 }

// Build returns base ("NAME=VALUE" entries) with every assignment of e
// applied in order: each file's, then each setting's, a later one
// replacing an earlier one of the same name. A variable keeps the place
// of its first appearance, base's included; new ones follow base.
//
// An assignment of a reserved name (see Reserved) is left out, and a
// warning, one line naming where it was made, says so. A file that cannot
// be read or parsed fails the whole Build with one line naming the file
// (and the line, for a parse error); base is never modified.
func (e Environment) Build(base []string) (env []string, warnings []string, err error) {
	var vars []Var
	for _, f := range e.Files {
		fv, err := f.Read()
		if err != nil {
			return nil, nil, err
		}
		vars = append(vars, fv...)
	}
	vars = append(vars, e.Settings...)

	env = make([]string, 0, len(base)+len(vars))
	at := make(map[string]int, len(base)+len(vars))
	set := func(name, kv string) {
		if i, ok := at[name]; ok {
			env[i] = kv
			return
		}
		at[name] = len(env)
		env = append(env, kv)
	}
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		set(name, kv)
	}
	for _, v := range vars {
		if Reserved(v.Name) {
			warnings = append(warnings, fmt.Sprintf("%s: %s is baton's to set: this assignment is ignored", v.Source, v.Name))
			continue
		}
		set(v.Name, v.Name+"="+v.Value)
	}
	return env, warnings, nil
}
