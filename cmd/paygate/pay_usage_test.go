package main

import (
	"strings"
	"testing"
)

// TestPayAmountUsageErrorSaysWhy: an amount the currency cannot hold is a usage error that says
// why (it once printed "<nil>" instead of the reason).
func TestPayAmountUsageErrorSaysWhy(t *testing.T) {
	t.Parallel()
	for amount, want := range map[string]string{
		"0.001": "more decimal places than USD's 2",
		"ten":   "not a decimal number",
	} {
		code, _, errOut := runCmd(t, "pay", "--from", "bank1-1001", "--to", "bank2-2001", "--amount", amount)
		if code != exitUsage || !strings.Contains(errOut, want) || strings.Contains(errOut, "<nil>") {
			t.Errorf("pay --amount %s: exit %d, stderr %q; want exit %d saying %q", amount, code, errOut, exitUsage, want)
		}
	}
}
