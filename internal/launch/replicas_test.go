package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// argValue returns the value of flag in args ("" when absent).
func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// TestReplicaArgs checks the command lines of a system of three gateway replicas: names, own
// ports, one database and lease TTL for all, and every replica's address at every bank.
func TestReplicaArgs(t *testing.T) {
	t.Parallel()
	const db = "postgres://u:pw@127.0.0.1:5432/gw"
	s, err := New(Options{Dir: t.TempDir(), Bin: "/bin/true", Banks: []string{"bank1", "bank2"},
		Accounts: map[string]string{"bank1": "{}", "bank2": "{}"}, Users: "{}", Web: true,
		Gateways: 3, GatewayDatabaseURL: db, LeaseTTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(false)
	if got, want := s.GatewayNames(), []string{"gateway", "gateway2", "gateway3"}; !slices.Equal(got, want) {
		t.Errorf("GatewayNames() = %v, want %v", got, want)
	}
	if got, want := s.Names(), []string{"bank1", "bank2", "gateway", "gateway2", "gateway3"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	if len(s.GatewayAddrs) != 3 || len(s.WebAddrs) != 3 || s.GatewayAddr != s.GatewayAddrs[0] || s.WebAddr != s.WebAddrs[0] {
		t.Fatalf("addresses: API %v (first %s), web %v (first %s)", s.GatewayAddrs, s.GatewayAddr, s.WebAddrs, s.WebAddr)
	}
	seen := map[string]bool{}
	for i, name := range s.GatewayNames() {
		if !s.IsGateway(name) || s.GatewayAddrOf(name) != s.GatewayAddrs[i] {
			t.Errorf("%s: IsGateway %v, address %q", name, s.IsGateway(name), s.GatewayAddrOf(name))
		}
		args, err := s.ReplicaArgs(name)
		if err != nil {
			t.Fatal(err)
		}
		for flag, want := range map[string]string{"--listen": s.GatewayAddrs[i], "--web": s.WebAddrs[i],
			"--database-url": db, "--lease-ttl": "1.5s", "--data": s.DataDir(name)} {
			if got := argValue(args, flag); got != want {
				t.Errorf("%s %s = %q, want %q", name, flag, got, want)
			}
		}
		for _, a := range []string{s.GatewayAddrs[i], s.WebAddrs[i]} {
			if seen[a] {
				t.Errorf("address %s given twice", a)
			}
			seen[a] = true
		}
	}
	first, _ := s.GatewayArgs()
	if r, _ := s.ReplicaArgs(GatewayName); !slices.Equal(first, r) {
		t.Errorf("GatewayArgs() = %v, ReplicaArgs(gateway) = %v", first, r)
	}
	if _, err := s.ReplicaArgs("gateway4"); err == nil {
		t.Error("ReplicaArgs of a replica that is not in the system: no error")
	}
	if s.IsGateway("bank1") {
		t.Error("bank1 is a gateway")
	}
	want := "https://" + strings.Join(s.GatewayAddrs, ",https://")
	for _, b := range s.Banks() {
		if got := argValue(s.BankArgs(b), "--gateway"); got != want {
			t.Errorf("%s --gateway = %q, want %q", b, got, want)
		}
	}
	if got := s.GatewayList(); got != strings.Join(s.GatewayAddrs, ",") {
		t.Errorf("GatewayList() = %q", got)
	}

	// One gateway keeps the command line it always had: no database, no lease.
	one, err := New(Options{Dir: t.TempDir(), Bin: "/bin/true", Banks: []string{"bank1"},
		Accounts: map[string]string{"bank1": "{}"}, Users: "{}"})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close(false)
	args, _ := one.GatewayArgs()
	if argValue(args, "--database-url") != "" || argValue(args, "--lease-ttl") != "" || len(one.GatewayAddrs) != 1 {
		t.Errorf("one SQLite gateway: %v", args)
	}
	if got := argValue(one.BankArgs("bank1"), "--gateway"); got != "https://"+one.GatewayAddr {
		t.Errorf("bank1 --gateway = %q", got)
	}

	if _, err := New(Options{Dir: t.TempDir(), Bin: "/bin/true", Banks: []string{"bank1"},
		Accounts: map[string]string{"bank1": "{}"}, Users: "{}", Gateways: 2}); err == nil {
		t.Error("two replicas without a database: no error")
	}
}

func TestReplicaName(t *testing.T) {
	t.Parallel()
	for i, want := range []string{"gateway", "gateway2", "gateway3", "gateway4", "gateway5", "gateway6", "gateway7", "gateway8", "gateway9", "gateway10"} {
		if got := ReplicaName(i); got != want {
			t.Errorf("ReplicaName(%d) = %q, want %q", i, got, want)
		}
	}
}

// TestSystemDatabases creates a system's databases on the test server (twice: the second time
// finds them), checks their URLs, and drops them.
func TestSystemDatabases(t *testing.T) {
	t.Parallel()
	if err := pgtest.Reachable(); err != nil {
		t.Skipf("PostgreSQL not reachable at %s (set PAYGATE_TEST_DATABASE_URL): %v", pgtest.URL(), err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "paygate_launch_" + hex.EncodeToString(b[:])
	server := pgtest.DatabaseURL(t, pgtest.URL(), name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if err := DropDatabases(context.Background(), server, name, name+"_bank1", name+"_bank2"); err != nil {
			t.Error(err)
		}
	})
	for range 2 {
		gw, banks, err := SystemDatabases(ctx, server, []string{"bank1", "bank2"})
		if err != nil {
			t.Fatal(err)
		}
		for u, db := range map[string]string{gw: name, banks["bank1"]: name + "_bank1", banks["bank2"]: name + "_bank2"} {
			if !strings.HasSuffix(strings.SplitN(u, "?", 2)[0], "/"+db) {
				t.Errorf("URL %s does not name database %s", u, db)
			}
			conn, err := pgx.Connect(ctx, u)
			if err != nil {
				t.Fatalf("connect to %s: %v", db, err)
			}
			conn.Close(ctx)
		}
	}
	gw, banks, err := SystemDatabases(ctx, server, []string{"bank1", "bank2"})
	if err != nil {
		t.Fatal(err)
	}
	if used, err := UsedDatabases(ctx, gw, banks["bank1"], banks["bank2"]); err != nil || len(used) != 0 {
		t.Errorf("UsedDatabases of fresh databases = %v, %v", used, err)
	}
	conn, err := pgx.Connect(ctx, banks["bank2"])
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, `CREATE TABLE accounts (id text)`)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if used, err := UsedDatabases(ctx, gw, banks["bank1"], banks["bank2"]); err != nil || len(used) != 1 || used[0] != name+"_bank2" {
		t.Errorf("UsedDatabases with a table in %s_bank2 = %v, %v", name, used, err)
	}
	for _, bad := range []string{"mysql://h/db", "postgres://h/", "postgres://h/Bad-Name", "postgres://h/" + strings.Repeat("a", 60)} {
		if _, _, err := SystemDatabases(ctx, bad, []string{"bank1"}); err == nil {
			t.Errorf("SystemDatabases(%q): no error", bad)
		}
	}
}
