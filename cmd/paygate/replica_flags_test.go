package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestReplicaFlagsUsage checks the usage errors of the replica flags: --database-url must be a
// postgres:// URL (and the message never shows it), --lease-ttl positive, and more than one
// gateway needs a database.
func TestReplicaFlagsUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "--certs", t.TempDir(), "--bank", "bank1=127.0.0.1:1", "--database-url", "mysql://u:s3cret@h/db"}, "--database-url"},
		{[]string{"gateway", "--certs", t.TempDir(), "--bank", "bank1=127.0.0.1:1", "--database-url", "host=h password=s3cret"}, "--database-url"},
		{[]string{"gateway", "--certs", t.TempDir(), "--bank", "bank1=127.0.0.1:1", "--database-url", "postgres://h/db", "--lease-ttl", "0s"}, "--lease-ttl"},
		{[]string{"bench", "--gateways", "2"}, "--database-url"},
		{[]string{"bench", "--gateways", "0", "--database-url", "postgres://h/db"}, "--gateways"},
		{[]string{"bench", "--database-url", "mysql://u:s3cret@h/db"}, "--database-url"},
		{[]string{"bench", "--dev", t.TempDir(), "--database-url", "postgres://h/db"}, "--dev"},
		{[]string{"chaos", "--gateways", "2"}, "PostgreSQL"},
		{[]string{"chaos", "--database-url", "mysql://u:s3cret@h/db"}, "--database-url"},
		{[]string{"dev", "--gateways", "2"}, "--database-url"},
		{[]string{"dev", "--database-url", "mysql://u:s3cret@h/db"}, "--database-url"},
		{[]string{"dev", "--gateways", "2", "--database-url", "postgres://h/db", "--listen", "127.0.0.1:65535"}, "--listen"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage); stderr %q", tc.args, code, exitUsage, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String(), "s3cret") {
			t.Errorf("%v: stderr %q; want a usage error naming %s, without the URL's secrets", tc.args, stderr.String(), tc.want)
		}
	}
}

func TestReplicaAddrs(t *testing.T) {
	t.Parallel()
	got, err := replicaAddrs("127.0.0.1:8443", 3)
	if err != nil || strings.Join(got, " ") != "127.0.0.1:8443 127.0.0.1:8444 127.0.0.1:8445" {
		t.Errorf("replicaAddrs(127.0.0.1:8443, 3) = %v, %v", got, err)
	}
	got, err = replicaAddrs("127.0.0.1:0", 2)
	if err != nil || strings.Join(got, " ") != "127.0.0.1:0 127.0.0.1:0" {
		t.Errorf("replicaAddrs(127.0.0.1:0, 2) = %v, %v", got, err)
	}
	for _, bad := range []string{"nohost", "127.0.0.1:x", "127.0.0.1:65535"} {
		if _, err := replicaAddrs(bad, 2); err == nil {
			t.Errorf("replicaAddrs(%q, 2): no error", bad)
		}
	}
}
