//go:build race

package harness

// raceEnabled builds the binaries under test with the race detector when
// the tests themselves run with it.
const raceEnabled = true

// ProcessEnv is added to the environment of every program the tests
// start. It stops race-built programs from sleeping a second at exit (the
// race runtime's default atexit_sleep_ms), which would slow every drain.
var ProcessEnv = []string{"GORACE=atexit_sleep_ms=10"}

// RaceEnabled reports whether the binaries under test carry the race
// detector, whose runtime makes their memory figures meaningless.
const RaceEnabled = raceEnabled
