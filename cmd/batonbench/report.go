package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Machine is where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
}

// Result is one mode's row.
type Result struct {
	Mode     string         `json:"mode"`
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	Errors   map[string]int `json:"errors,omitempty"`
	P50MS    float64        `json:"p50_ms"`
	P99MS    float64        `json:"p99_ms"`
	MaxMS    float64        `json:"max_ms"`
	// ReloadMS is each reload's duration: signal until the old server is
	// gone and the new one serves.
	ReloadMS     []float64 `json:"reload_ms"`
	ReloadMeanMS float64   `json:"reload_mean_ms"`
	ReloadMaxMS  float64   `json:"reload_max_ms"`
	// MasterRSSKB is the RSS of the process that holds the sockets across
	// reloads (the baton master, the socket holder), after the reloads; 0
	// when there is none.
	MasterRSSKB int `json:"master_rss_kb,omitempty"`
	// PIDStable says whether the service's PID (what a supervisor
	// watches) was the same after the reloads as before.
	PIDStable bool `json:"pid_stable"`
	// ServerPIDs is how many server processes answered requests.
	ServerPIDs int `json:"server_pids"`
}

// Report is the whole run, as written with -json.
type Report struct {
	Machine Machine  `json:"machine"`
	Config  Config   `json:"config"`
	Command string   `json:"command"`
	Results []Result `json:"results"`
}

func printMachine(w io.Writer, m Machine) {
	fmt.Fprintf(w, "machine: %d CPUs, %s, Linux %s, %s\n", m.CPUs, m.CPUModel, m.Kernel, m.Go)
}

func printTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\trequests\tfailed\tp50\tp99\tmax\treload mean\treload max\tmaster RSS\tPID stable\t")
	for _, r := range results {
		rss := "-"
		if r.MasterRSSKB > 0 {
			rss = fmt.Sprintf("%.1f MB", float64(r.MasterRSSKB)/1024)
		}
		stable := "no"
		if r.PIDStable {
			stable = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Mode, r.Requests, r.Failed,
			fmtMS(r.P50MS), fmtMS(r.P99MS), fmtMS(r.MaxMS), fmtMS(r.ReloadMeanMS), fmtMS(r.ReloadMaxMS), rss, stable)
	}
	tw.Flush()
	for _, r := range results {
		if r.Failed == 0 {
			continue
		}
		kinds := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			kinds = append(kinds, k)
		}
		sort.Slice(kinds, func(i, j int) bool { return r.Errors[kinds[i]] > r.Errors[kinds[j]] })
		for i, k := range kinds {
			if i == 3 {
				break
			}
			fmt.Fprintf(w, "  %s: %d× %s\n", r.Mode, r.Errors[k], shortErr(k))
		}
	}
}

// shortErr drops the URL that every client error repeats.
func shortErr(s string) string {
	if i := strings.LastIndex(s, "\": "); i >= 0 {
		return s[i+3:]
	}
	return s
}

func fmtMS(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

func ms(d time.Duration) float64 { return round2(float64(d) / float64(time.Millisecond)) }

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return round2((s[len(s)/2-1] + s[len(s)/2]) / 2)
}

func maxOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
