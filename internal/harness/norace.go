//go:build !race

package harness

const raceEnabled = false

// ProcessEnv is added to the environment of every program the tests start.
var ProcessEnv []string

// RaceEnabled reports whether the binaries under test carry the race
// detector, whose runtime makes their memory figures meaningless.
const RaceEnabled = raceEnabled
