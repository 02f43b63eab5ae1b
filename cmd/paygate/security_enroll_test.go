package main

import "testing"

// enrollmentCases returns TestSecurityMatrix's cases for registration needs the bank's enrollment code.
func enrollmentCases(t *testing.T, m *secMatrix) []secCase {
	return nil
}
