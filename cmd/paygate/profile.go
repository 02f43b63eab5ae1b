package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startProfile starts a CPU profile written to the file named by PAYGATE_CPUPROFILE, if set,
// and returns the function that finishes it. It is for performance work on the servers: run
// them with the variable set, stop them with SIGTERM or Ctrl-C, then `go tool pprof FILE`.
func startProfile() func() {
	path := os.Getenv("PAYGATE_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "paygate: PAYGATE_CPUPROFILE: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "paygate: PAYGATE_CPUPROFILE: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
