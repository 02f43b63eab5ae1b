package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestWebhookFlagsUsage checks the usage errors of the gateway's webhook flags: durations
// positive (the retention may be 0), the backoff's maximum no less than its minimum.
func TestWebhookFlagsUsage(t *testing.T) {
	t.Parallel()
	base := []string{"gateway", "--certs", t.TempDir(), "--bank", "bank1=127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--webhook-timeout", "0s"}, "--webhook-timeout"},
		{[]string{"--webhook-retry-for", "-1h"}, "--webhook-retry-for"},
		{[]string{"--webhook-backoff-min", "0s"}, "--webhook-backoff-min"},
		{[]string{"--webhook-backoff-min", "1m", "--webhook-backoff-max", "30s"}, "--webhook-backoff-max"},
		{[]string{"--event-retention", "-1s"}, "--event-retention"},
	} {
		args := append(append([]string(nil), base...), tc.args...)
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage); stderr %q", tc.args, code, exitUsage, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q; want a usage error naming %s", tc.args, stderr.String(), tc.want)
		}
	}
}
