package cluster

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
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

// TestClusterReplicas starts two gateway replicas on PostgreSQL, logs in at one and uses the
// session at the other, kills and restarts the second on its address, and checks that the
// banks were given both replicas.
func TestClusterReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds paygate and starts five processes")
	}
	t.Parallel()
	c := New(t, Options{Gateways: 2})
	if c.Backend != Postgres || c.GatewayDatabaseURL() == "" {
		t.Fatalf("two replicas on backend %q, database %q", c.Backend, c.GatewayDatabaseURL())
	}
	if got := c.GatewayNames(); len(got) != 2 || got[0] != "gateway" || got[1] != "gateway2" {
		t.Fatalf("GatewayNames() = %v", got)
	}
	if c.GatewayAddrs[0] != c.GatewayAddr || c.GatewayAddrOf("gateway2") != c.GatewayAddrs[1] || c.GatewayAddrs[0] == c.GatewayAddrs[1] {
		t.Fatalf("addresses %v, first %s", c.GatewayAddrs, c.GatewayAddr)
	}
	u, err := c.LoginAt(c.GatewayAddrs[1], "alice", "alice-pass-123")
	if err != nil {
		t.Fatalf("login at gateway2: %v", err)
	}
	at1 := c.UserAt(c.GatewayAddr, "alice", u.Token)
	if _, err := at1.Balance.FetchBalance(context.Background(), connect.NewRequest(&gatewayv1.FetchBalanceRequest{})); err != nil {
		t.Errorf("gateway2's session at gateway: %v", err)
	}
	c.Kill("gateway2")
	c.StartReplica("gateway2")
	if got := c.GrepLog("gateway2", "gateway serving", c.GatewayAddrs[1]); len(got) != 2 {
		t.Errorf("gateway2's log has %d serving lines at %s, want one per run", len(got), c.GatewayAddrs[1])
	}
	want := "https://" + c.GatewayAddrs[0] + ",https://" + c.GatewayAddrs[1]
	for _, b := range []string{"bank1", "bank2", "bank3"} {
		args := c.BankArgs(b)
		found := false
		for i, a := range args {
			found = found || (a == "--gateway" && i+1 < len(args) && args[i+1] == want)
		}
		if !found {
			t.Errorf("%s is not given both replicas (%s): %v", b, want, args)
		}
	}
}
