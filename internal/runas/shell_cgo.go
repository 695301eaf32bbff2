//go:build cgo && !osusergo

package runas

/*
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>

// shell_of looks up the user called name with buf as getpwnam_r's
// buffer, and returns its login shell, which points into buf, or NULL if
// there is no such user or *err is set.
static char *shell_of(const char *name, char *buf, size_t len, int *err) {
	struct passwd pw, *res = NULL;
	*err = getpwnam_r(name, &pw, buf, len, &res);
	if (*err != 0 || res == NULL)
		return NULL;
	return pw.pw_shell;
}
*/
import "C"

import (
	"syscall"
	"unsafe"
)

// lookupShell is the login shell of the user called name, looked up
// through the C library's name service switch as os/user looks users up
// in this build; "" for a user it does not know.
func lookupShell(name string) (string, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	for size := 1024; size <= 1<<20; size *= 2 {
		buf := (*C.char)(C.malloc(C.size_t(size)))
		var rc C.int
		shell := C.shell_of(cname, buf, C.size_t(size), &rc)
		s := ""
		if shell != nil {
			s = C.GoString(shell)
		}
		C.free(unsafe.Pointer(buf))
		switch syscall.Errno(rc) {
		case 0, syscall.ENOENT, syscall.ESRCH: // found, or not: both answers
			return s, nil
		case syscall.ERANGE:
			continue
		}
		return "", syscall.Errno(rc)
	}
	return "", syscall.ERANGE
}
