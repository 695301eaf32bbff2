//go:build !race

package harness

const raceEnabled = false

// ProcessEnv is added to the environment of every program the tests start.
var ProcessEnv []string
