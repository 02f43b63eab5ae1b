package cluster

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/grpchealth"
)

// TestClusterStartStop starts a cluster, stops a bank gracefully and starts it again on the
// same address, kills and restarts the gateway, and checks that the logs keep every run and
// the system still answers.
func TestClusterStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds paygate and starts four processes")
	}
	t.Parallel()
	c := New(t, Options{})
	addr := c.BankAddrs["bank1"]

	c.Stop("bank1")
	if p := c.Proc("bank1"); !p.Exited() {
		t.Fatal("bank1 runs after Stop")
	}
	if err := c.WaitBankHealth("bank1", grpchealth.StatusNotServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.StartBank("bank1")
	if c.BankAddrs["bank1"] != addr {
		t.Fatalf("bank1 moved from %s to %s", addr, c.BankAddrs["bank1"])
	}
	if err := c.WaitBankHealth("bank1", grpchealth.StatusServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := c.GrepLog("bank1", `"msg":"serving"`, addr); len(got) != 2 {
		t.Errorf("bank1's log has %d serving lines at %s, want one per run: %q", len(got), addr, got)
	}

	c.Pause("bank2")
	c.Resume("bank2")
	c.Kill("gateway")
	if p := c.Proc("gateway"); !p.Exited() {
		t.Fatal("the gateway runs after Kill")
	}
	c.StartGateway()
	if _, err := c.Login("alice", "alice-pass-123"); err != nil {
		t.Fatalf("login after the gateway's restart: %v", err)
	}
	l, err := c.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Accounts) == 0 || !l.Settled() {
		t.Errorf("audit: %d accounts, held %d, pending %d", len(l.Accounts), l.Held, l.Pending)
	}
}
