//go:build linux && !amd64 && !arm64

package accepting

// waitOf knows the system call numbers of amd64 and arm64 only, whose
// fd_set layout (little-endian longs) the select check also assumes. On
// other architectures no thread is ever recognised as waiting: Check
// finds nothing, and --ready accepting would wait for its timeout. Use
// --ready notify or delay= there.
func waitOf(nr int) Via { return 0 }
