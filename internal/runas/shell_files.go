//go:build !cgo || osusergo

package runas

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"strings"
)

// passwdFile is the password database of a static build, as os/user
// reads it in this build.
var passwdFile = "/etc/passwd"

// lookupShell is the login shell of the user called name in /etc/passwd;
// "" for a user it does not list.
func lookupShell(name string) (string, error) {
	f, err := os.Open(passwdFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	return shellIn(bufio.NewScanner(f), name)
}

// shellIn reads passwd(5) lines, name:password:uid:gid:gecos:home:shell,
// and returns the shell of the first that names name. Blank lines,
// comments and NIS compat lines (+ and -) are skipped, as glibc's files
// module skips them.
func shellIn(sc *bufio.Scanner, name string) (string, error) {
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) == 7 && fields[0] == name {
			return fields[6], nil
		}
	}
	return "", sc.Err()
}
