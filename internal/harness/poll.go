package harness

import (
	"testing"
	"time"
)

// Polling intervals: baton's log is in memory and cheap to look at again,
// /proc and `baton status` are not.
const (
	logPoll   = 5 * time.Millisecond
	statePoll = 10 * time.Millisecond
)

// poll calls done every interval until it returns true, and reports
// whether it did within d. done runs at least once, and its last call may
// begin just after d, so a slow look still gets its last chance. Every
// wait of this package that looks again and again is built on it.
func poll(d, interval time.Duration, done func() bool) bool {
	deadline := time.Now().Add(d)
	for !done() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}

// Eventually polls cond until it holds, failing the test after d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(d, statePoll, cond) {
		t.Fatalf("%s: not within %s", what, d)
	}
}
