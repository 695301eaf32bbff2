package main

import (
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-sh/baton/internal/envnames"
)

// batonbench shim measures what baton's exec shim adds to a worker's
// start:
//
//	batonbench shim [-n 50] [-program /bin/true] [-json FILE]
//
// Go cannot run code between fork and exec, so the master starts each
// worker as its own binary with envnames.ExecShim naming the worker, and
// that process sets LISTEN_PID and execs the worker in place. The cost is
// an exec of baton and its runtime's start. Here -program, which exits at
// once, is run -n times directly and -n times through the shim, in turns,
// each from the fork until it has exited and been waited for; the cost is
// the difference of the medians.

// ShimReport is the whole run, as written with -json.
type ShimReport struct {
	Machine  Machine   `json:"machine"`
	Command  string    `json:"command"`
	Baton    string    `json:"baton"`
	Linking  string    `json:"baton_linking"` // "static" or "dynamic"
	Program  string    `json:"program"`
	DirectMS []float64 `json:"direct_ms"`
	ShimMS   []float64 `json:"shim_ms"`
	// CostMS is the median through the shim less the median direct.
	CostMS float64 `json:"cost_ms"`
}

func shimCmd(args []string, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "batonbench:", err)
		return 1
	}
	fs := flag.NewFlagSet("batonbench shim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 50, "starts of each kind")
	program := fs.String("program", "/bin/true", "a program that exits at once")
	baton := fs.String("baton", filepath.Join(filepath.Dir(self), "baton"), "baton binary")
	jsonOut := fs.String("json", "", "also write the results as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *n < 1 || *n > 10000 {
		fmt.Fprintln(stderr, "batonbench shim: want 1 to 10000 starts")
		return 2
	}
	if !binariesExist(stderr, *baton, *program) {
		return 1
	}
	rep := ShimReport{Machine: machine(), Command: "batonbench shim " + strings.Join(args, " "),
		Baton: *baton, Linking: linking(*baton), Program: *program}
	for i := 0; i < *n; i++ {
		d, err := timeRun(exec.Command(*program))
		if err != nil {
			fmt.Fprintf(stderr, "batonbench shim: %s: %v\n", *program, err)
			return 1
		}
		rep.DirectMS = append(rep.DirectMS, ms(d))
		shim := exec.Command(*baton)
		shim.Env = append(workerEnv(), envnames.ExecShim+"="+*program)
		if d, err = timeRun(shim); err != nil {
			fmt.Fprintf(stderr, "batonbench shim: %s through the shim: %v\n", *program, err)
			return 1
		}
		rep.ShimMS = append(rep.ShimMS, ms(d))
	}
	rep.CostMS = round2(median(rep.ShimMS) - median(rep.DirectMS))
	printMachine(stdout, rep.Machine)
	fmt.Fprintf(stdout, "%s, %d times each (baton %s, %s):\n", *program, *n, *baton, rep.Linking)
	fmt.Fprintf(stdout, "  directly          median %s, max %s\n", fmtMS(median(rep.DirectMS)), fmtMS(maxOf(rep.DirectMS)))
	fmt.Fprintf(stdout, "  through the shim  median %s, max %s\n", fmtMS(median(rep.ShimMS)), fmtMS(maxOf(rep.ShimMS)))
	fmt.Fprintf(stdout, "  the shim's cost   %s\n", fmtMS(rep.CostMS))
	if *jsonOut != "" && !writeJSON(stderr, *jsonOut, rep) {
		return 1
	}
	return 0
}

// timeRun runs cmd and returns how long it took from the fork until it
// had exited and was waited for.
func timeRun(cmd *exec.Cmd) (time.Duration, error) {
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("%v: %s", err, out)
	}
	return d, nil
}

// linking says whether the ELF binary at path asks for a dynamic loader
// (has a PT_INTERP header): "dynamic", "static", or "unknown".
func linking(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "dynamic"
		}
	}
	return "static"
}
