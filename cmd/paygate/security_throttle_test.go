package main

import "testing"

// throttleCases returns TestSecurityMatrix's cases for login and registration budgets under
// concurrency.
func throttleCases(t *testing.T, m *secMatrix) []secCase {
	return nil
}
