package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/launch"
	"github.com/paygate/paygate/internal/pgdb/pgtest"
)

// TestDevPostgresReplicas runs `paygate dev --database-url ... --gateways 2`: the banner and
// dev.json list both replicas and the PostgreSQL backend, a session made at the second replica
// pays there and reads the payment at the first, and Ctrl-C stops everything. It skips when no
// PostgreSQL server can be reached.
func TestDevPostgresReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs paygate dev on PostgreSQL")
	}
	t.Parallel()
	if err := pgtest.Reachable(); err != nil {
		t.Skipf("PostgreSQL not reachable at %s (set PAYGATE_TEST_DATABASE_URL): %v", pgtest.URL(), err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "paygate_dev_" + hex.EncodeToString(b[:])
	url := pgtest.DatabaseURL(t, pgtest.URL(), name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := launch.DropDatabases(ctx, url, name, name+"_bank1", name+"_bank2", name+"_bank3"); err != nil {
			t.Errorf("drop the databases: %v", err)
		}
	})
	bin := cluster.Binary(t)
	work := t.TempDir()
	dir := filepath.Join(work, ".paygate")
	d := startDevProcess(t, bin, work, dir, nil, "dev", "--dir", dir, "--listen", "127.0.0.1:0", "--web", "",
		"--database-url", url, "--gateways", "2", "--log-level", "warn")
	info := d.info
	if len(info.APIs) != 2 || info.APIs[0] != info.API || info.APIs[0] == info.APIs[1] || info.Backend != "postgres" {
		t.Fatalf("dev.json: api %q, apis %v, backend %q; want two replicas on postgres", info.API, info.APIs, info.Backend)
	}
	banner := d.out.String()
	if !strings.Contains(banner, strings.Join(info.APIs, ",")) || !strings.Contains(banner, name) {
		t.Errorf("the banner does not list both replicas (%v) and the database %s:\n%s", info.APIs, name, banner)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	second := info
	second.API = info.APIs[1]
	login, err := newDevClients(t, second, "").auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: "alice", Password: passwords["alice"]}))
	if err != nil {
		t.Fatalf("login at the second replica: %v", err)
	}
	at2 := newDevClients(t, second, login.Msg.GetToken())
	id := newID()
	resp, err := at2.payments.ExecutePayment(ctx, connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: id, FromAccount: "bank1-1001", ToAccount: "bank2-2002", Amount: 100, Currency: "USD"}))
	if err != nil || resp.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("payment at the second replica: %v, %v", resp, err)
	}
	// The first replica knows the session and the payment.
	at1 := newDevClients(t, info, login.Msg.GetToken())
	got, err := at1.payments.GetPayment(ctx, connect.NewRequest(&gatewayv1.GetPaymentRequest{PaymentId: id}))
	if err != nil || got.Msg.GetPayment().GetStatus() != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("GetPayment at the first replica with the second's session: %v, %v", got, err)
	}
	d.interrupt()
}
