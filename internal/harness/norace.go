//go:build !race

package harness

const raceEnabled = false

var raceEnv []string
