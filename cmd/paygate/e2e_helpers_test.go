package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	ledgeraudit "github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcserver"
)

// The demo users of fixtures/user_details.json.
var passwords = map[string]string{
	"alice": "alice-pass-123",
	"bob":   "bob-pass-456",
	"carol": "carol-pass-789",
	"dave":  "dave-pass-000",
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func login(t testing.TB, c *cluster.Cluster, user string) *cluster.User {
	t.Helper()
	u, err := c.Login(user, passwords[user])
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return u
}

func pay(ctx context.Context, u *cluster.User, id, from, to string, amount int64) (*gatewayv1.ExecutePaymentResponse, error) {
	resp, err := u.Payments.ExecutePayment(ctx, connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: id, FromAccount: from, ToAccount: to, Amount: amount, Currency: "USD",
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// audit returns the ledger now.
func audit(t testing.TB, c *cluster.Cluster) cluster.Ledger {
	t.Helper()
	l, err := c.Audit(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// checkSettled waits until every transaction is resolved and checks the money invariants
// against the ledger before the test moved money: the total is what it was plus deposits and
// minus withdrawals (and initial + deposits − withdrawals), no hold or pending credit is left,
// no account is negative, and no account disappeared (an admin may have opened some). It
// returns the settled ledger.
func checkSettled(t testing.TB, c *cluster.Cluster, before cluster.Ledger, within time.Duration) cluster.Ledger {
	t.Helper()
	after, err := c.WaitSettled(within)
	if err != nil {
		t.Fatalf("ledger did not settle: %v", err)
	}
	if err := ledgeraudit.Conserved(before, after); err != nil {
		t.Errorf("conservation: %v", err)
	}
	for id, a := range after.Accounts {
		if a.GetBalance() < 0 || a.GetAvailable() < 0 {
			t.Errorf("overdraft: %s has balance %d, available %d", id, a.GetBalance(), a.GetAvailable())
		}
	}
	for id := range before.Accounts {
		if _, ok := after.Accounts[id]; !ok {
			t.Errorf("account %s disappeared", id)
		}
	}
	return after
}

// delta returns how each account's balance changed from before to after (non-zero only).
func delta(before, after cluster.Ledger) map[string]int64 {
	out := map[string]int64{}
	for id, a := range after.Accounts {
		if d := a.GetBalance() - before.Accounts[id].GetBalance(); d != 0 {
			out[id] = d
		}
	}
	return out
}

func timestampIn(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(time.Now().Add(d)) }

// postJSON sends body to procedure with the Connect protocol's JSON encoding (what a browser or
// curl would send) and returns the error code and message of the answer ("" for success).
func postJSON(t testing.TB, c *cluster.Cluster, token, procedure, body string) (code, msg string) {
	t.Helper()
	tlsCfg, err := pki.ClientTLS(c.CertPath("ca.pem"), c.CertPath("client-cli.pem"), c.CertPath("client-cli-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, "https://"+c.GatewayAddr+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := rpcserver.NewHTTPClient(tlsCfg).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Code, Message string }
	json.NewDecoder(resp.Body).Decode(&e)
	return e.Code, e.Message
}
