package main

import (
	"runtime/debug"
	"testing"
)

// TestConfigureGC: without GOGC the processes collect at defaultGCPercent; with it, GOGC wins.
func TestConfigureGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	if got := configureGC(func(string) string { return "" }); got != defaultGCPercent {
		t.Errorf("GOGC unset: %d, want %d", got, defaultGCPercent)
	}
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GOGC unset: the runtime has %d, want %d", got, defaultGCPercent)
	}
	if got := configureGC(func(k string) string { return map[string]string{"GOGC": "100"}[k] }); got != 100 {
		t.Errorf("GOGC=100: %d, want the runtime's 100 left alone", got)
	}
}
