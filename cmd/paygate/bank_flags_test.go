package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// parseBankGateway parses args with the bank command's flags (and PAYGATE_* variables) and
// returns the gateway URLs it would ask.
func parseBankGateway(t *testing.T, args ...string) ([]string, error) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := newBankCommand(&env{stdout: &bytes.Buffer{}, stderr: &stderr})
	if err := cmd.Parse(args); err != nil {
		return nil, err
	}
	return cmd.FlagSet.Lookup("gateway").Value.(*gatewayAddrs).urls, nil
}

// --gateway takes one address or a comma-separated list of replicas, as does PAYGATE_GATEWAY.
func TestBankGatewayFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{args: nil, want: nil},
		{args: []string{"--gateway", "127.0.0.1:8443"}, want: []string{"https://127.0.0.1:8443"}},
		{args: []string{"--gateway", "https://gw.example:8443"}, want: []string{"https://gw.example:8443"}},
		{args: []string{"--gateway", "a:8443, https://b:8443,[::1]:9443"}, want: []string{"https://a:8443", "https://b:8443", "https://[::1]:9443"}},
		{args: []string{"--gateway", "a:8443", "--gateway", "b:8443"}, want: []string{"https://a:8443", "https://b:8443"}},
	} {
		got, err := parseBankGateway(t, tt.args...)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%q: %q, %v; want %q", tt.args, got, err, tt.want)
		}
	}

	t.Setenv("PAYGATE_GATEWAY", "a:8443,b:8443")
	if got, err := parseBankGateway(t); err != nil || !slices.Equal(got, []string{"https://a:8443", "https://b:8443"}) {
		t.Errorf("PAYGATE_GATEWAY=a:8443,b:8443: %q, %v", got, err)
	}
	// The flag wins over the environment.
	if got, err := parseBankGateway(t, "--gateway", "c:8443"); err != nil || !slices.Equal(got, []string{"https://c:8443"}) {
		t.Errorf("--gateway c:8443 with PAYGATE_GATEWAY set: %q, %v", got, err)
	}
}

// A bad entry of --gateway is a usage error that names it.
func TestBankGatewayFlagUsage(t *testing.T) {
	for _, tt := range []struct{ value, want string }{
		{"a:8443,b-without-port", `"b-without-port"`},
		{"a:8443,http://b:8443", `"http://b:8443"`},
		{"https://a:8443/path", `"https://a:8443/path"`},
		{":8443", `":8443"`},
		{"a:8443,a:8443", `"a:8443" given twice`},
		{",", "want HOST:PORT"},
	} {
		code, _, errOut := runCmd(t, "bank", "--name", "bank1", "--certs", t.TempDir(), "--gateway", tt.value)
		if code != exitUsage || !strings.Contains(errOut, "-gateway") || !strings.Contains(errOut, tt.want) {
			t.Errorf("--gateway %q: exit %d, stderr %q; want a usage error naming %s", tt.value, code, errOut, tt.want)
		}
	}
	t.Setenv("PAYGATE_GATEWAY", "a:8443,nope")
	code, _, errOut := runCmd(t, "bank", "--name", "bank1", "--certs", t.TempDir())
	if code != exitUsage || !strings.Contains(errOut, "PAYGATE_GATEWAY") || !strings.Contains(errOut, `"nope"`) {
		t.Errorf("PAYGATE_GATEWAY=a:8443,nope: exit %d, stderr %q; want a usage error naming the entry", code, errOut)
	}
}
