//go:build linux

package keeper

import "github.com/baton-sh/baton/internal/proc"

// signalGroup signals the process group led by the process of fd; tests
// replace it to take the way of kernels before Linux 6.9.
var signalGroup = proc.PidFD.SignalGroup
