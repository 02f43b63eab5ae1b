package main

import (
	"errors"
	"strings"
	"testing"
)

// TestMetricsTLSFlags: the operations listener's TLS flags are refused as usage errors when
// they do not go together, and a key pair that cannot be loaded is an error naming the files.
func TestMetricsTLSFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		m    metricsFlag
		want string // in the error; "" for none
	}{
		{"off", metricsFlag{}, ""},
		{"plain HTTP", metricsFlag{addr: "127.0.0.1:0"}, ""},
		{"cert without key", metricsFlag{addr: "127.0.0.1:0", cert: "c.pem"}, "--metrics-cert and --metrics-key go together"},
		{"key without cert", metricsFlag{addr: "127.0.0.1:0", key: "k.pem"}, "--metrics-cert and --metrics-key go together"},
		{"client CA without TLS", metricsFlag{addr: "127.0.0.1:0", clientCA: "ca.pem"}, "--metrics-client-ca needs --metrics-cert"},
		{"TLS without a listener", metricsFlag{cert: "c.pem", key: "k.pem"}, "need --metrics-listen"},
		{"missing files", metricsFlag{addr: "127.0.0.1:0", cert: "/nonexistent/c.pem", key: "/nonexistent/k.pem"}, "--metrics-cert /nonexistent/c.pem"},
	} {
		_, srv, err := tc.m.start(nil)
		if srv != nil {
			_ = stopMetrics(srv, nil)
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		var ue *usageError
		if tc.want != "" && tc.name != "missing files" && !errors.As(err, &ue) {
			t.Errorf("%s: %v is not a usage error", tc.name, err)
		}
	}
}
