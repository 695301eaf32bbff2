// Package activation reads the descriptors a process was given by systemd's
// socket-activation protocol (sd_listen_fds(3)): LISTEN_FDS descriptors
// from fd 3, named by LISTEN_FDNAMES, meant for this process only when
// LISTEN_PID is its PID; and it tells which of them a program means by a
// name or an address (Choose). Both ends of baton use it, so that both
// agree: the master, which a service manager may activate and which looks
// for each --listen spec among the sockets passed, and a worker's
// listener.Listen, which looks for the address its server asks for.
package activation

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Environment variables of the protocol.
const (
	EnvFDs     = "LISTEN_FDS"
	EnvFDNames = "LISTEN_FDNAMES"
	EnvPID     = "LISTEN_PID"
)

// FirstFD is the descriptor number of the first passed socket: 0, 1 and 2
// are stdio.
const FirstFD = 3

// File is one passed descriptor and the name it was passed under.
type File struct {
	// Name is its LISTEN_FDNAMES entry, or "fd3", "fd4", … when it has
	// none. Names may repeat: systemd names every socket of a .socket unit
	// after the unit unless FileDescriptorName= says otherwise.
	Name string
	File *os.File
}

// Files returns the passed descriptors in order, each marked close-on-exec
// so that it does not leak into programs this process starts. It returns
// none when LISTEN_PID names another process: the variables were meant for
// a parent. Call it once per process: the files it returns own the
// descriptors.
func Files() ([]File, error) {
	if os.Getenv(EnvPID) != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv(EnvFDs))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s=%q is not a count of descriptors", EnvFDs, os.Getenv(EnvFDs))
	}
	var names []string
	if v := os.Getenv(EnvFDNames); v != "" {
		names = strings.Split(v, ":")
	}
	files := make([]File, 0, n)
	for i := 0; i < n; i++ {
		fd := FirstFD + i
		syscall.CloseOnExec(fd)
		name := "fd" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		files = append(files, File{Name: name, File: os.NewFile(uintptr(fd), name)})
	}
	return files, nil
}
