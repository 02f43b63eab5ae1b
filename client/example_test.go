package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/paygate/paygate/client"
)

// The Examples run against a paygate system that this package's tests start, like `paygate
// dev` does: gatewayAddr is its gateway ("127.0.0.1:8443" after `paygate dev`) and certDir
// holds the certificates of `paygate certs` (".paygate/certs" after `paygate dev`). The users
// and accounts are those of the repository's fixtures.

// Connect with the certificates of `paygate certs`, log in, and pay 25.00 USD.
func Example() {
	ctx := context.Background()
	c, err := client.New(gatewayAddr, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Login(ctx, "alice", "alice-pass-123"); err != nil {
		log.Fatal(err)
	}
	amount, err := client.ParseAmount("25.00", "USD")
	if err != nil {
		log.Fatal(err)
	}
	r, err := c.Pay(ctx, client.PaymentRequest{From: "bank1-1001", To: "bank2-2002", Amount: amount, Currency: "USD"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Status, client.FormatAmount(r.Request.Amount, r.Request.Currency), r.Request.Currency)
	// Output: succeeded 25.00 USD
}

// Several replicas of the gateway, in order of preference: a call that cannot reach one
// address is made at the next, and the next call starts where the last one was answered. Here
// nothing listens at the first address (downAddr).
func ExampleNewMulti() {
	ctx := context.Background()
	c, err := client.NewMulti([]string{downAddr, gatewayAddr}, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Login(ctx, "alice", "alice-pass-123"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("answered by the second address:", c.ActiveAddress() == c.Addresses()[1])
	// Output: answered by the second address: true
}

// Register creates a user for the holder of bank accounts. Each account needs the one-time
// enrollment code its bank sent to the holder (the bank makes it with `paygate bank enroll`):
// here frankCode, for frank's account bank2-2003. Knowing the holder's name is not enough.
func ExampleClient_Register() {
	ctx := context.Background()
	c, err := client.New(gatewayAddr, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	_, err = c.Register(ctx, "frank", "frank-password-1", client.Enrollment{Account: "bank2-2003", Code: "AAAA-BBBB-CCCC-DDDD"})
	fmt.Println("a wrong code:", client.Reason(err))

	linked, err := c.Register(ctx, "frank", "frank-password-1", client.Enrollment{Account: "bank2-2003", Code: frankCode})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("linked:", linked)
	if _, err := c.Login(ctx, "frank", "frank-password-1"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// a wrong code: enrollment_refused
	// linked: [bank2-2003]
}

// A payment the bank refuses is FAILED with a machine-readable reason, and is not retried.
func ExampleClient_Pay_refused() {
	ctx := context.Background()
	c, err := client.New(gatewayAddr, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "dave", "dave-pass-000"); err != nil {
		log.Fatal(err)
	}
	r, err := c.Pay(ctx, client.PaymentRequest{From: "bank1-1003", To: "bank2-2002", Amount: 1_000_000_00, Currency: "USD"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Status, r.Reason, r.Attempts)
	// Output: failed insufficient_funds 1
}

// Pay with a queue never loses a payment: while the gateway cannot be reached it is kept on
// disk, and a client (in this process or a later one) delivers it when the gateway is back and
// reports the outcome.
func ExampleWithQueue() {
	ctx := context.Background()
	queueDir, err := os.MkdirTemp("", "paygate-queue-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(queueDir)

	online, err := client.New(gatewayAddr, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer online.Close()
	s, err := online.Login(ctx, "carol", "carol-pass-789")
	if err != nil {
		log.Fatal(err)
	}

	// A client whose gateway cannot be reached (nothing listens on port 1): Pay queues.
	offline, err := client.New("127.0.0.1:1", client.WithTLSDir(certDir),
		client.WithToken(s.Token), client.WithUsername(s.Username), client.WithQueue(queueDir))
	if err != nil {
		log.Fatal(err)
	}
	r, err := offline.Pay(ctx, client.PaymentRequest{From: "bank3-3002", To: "bank1-1001", Amount: 1000, Currency: "USD"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pay:", r.Status)
	offline.Close()

	// Later, with the gateway reachable: the sender delivers the queue and reports outcomes.
	outcomes := make(chan client.Result, 1)
	later, err := client.New(gatewayAddr, client.WithTLSDir(certDir),
		client.WithToken(s.Token), client.WithUsername(s.Username), client.WithQueue(queueDir),
		client.WithOutcomes(func(r client.Result) { outcomes <- r }))
	if err != nil {
		log.Fatal(err)
	}
	defer later.Close()
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := later.Flush(fctx, nil); err != nil {
		log.Fatal(err)
	}
	o := <-outcomes
	fmt.Println("outcome:", o.Status, o.ID == r.ID)
	// Output:
	// pay: queued
	// outcome: succeeded true
}

// History pages through the user's payments, newest first.
func ExampleClient_History() {
	ctx := context.Background()
	c, err := client.New(gatewayAddr, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "bob", "bob-pass-456"); err != nil {
		log.Fatal(err)
	}
	for _, cents := range []int64{100, 200, 300} {
		if _, err := c.Pay(ctx, client.PaymentRequest{From: "bank2-2002", To: "bank3-3001", Amount: cents, Currency: "USD"}); err != nil {
			log.Fatal(err)
		}
	}
	q := client.HistoryQuery{PageSize: 2}
	for page := 1; ; page++ {
		p, err := c.History(ctx, q)
		if err != nil {
			log.Fatal(err)
		}
		for _, pay := range p.Payments {
			fmt.Println("page", page, client.FormatAmount(pay.GetAmount(), pay.GetCurrency()), pay.GetStatus())
		}
		if p.NextPageToken == "" {
			break
		}
		q.PageToken = p.NextPageToken
	}
	// Output:
	// page 1 3.00 PAYMENT_STATUS_SUCCEEDED
	// page 1 2.00 PAYMENT_STATUS_SUCCEEDED
	// page 2 1.00 PAYMENT_STATUS_SUCCEEDED
}

// Balance reports every account of the user, per bank, and totals per currency.
func ExampleClient_Balance() {
	ctx := context.Background()
	c, err := client.New(gatewayAddr, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "dave", "dave-pass-000"); err != nil {
		log.Fatal(err)
	}
	b, err := c.Balance(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, bank := range b.GetBanks() {
		for _, a := range bank.GetAccounts() {
			fmt.Println(bank.GetBank(), a.GetAccountId(), client.FormatAmount(a.GetAvailable(), a.GetCurrency()), a.GetCurrency())
		}
	}
	// Output: bank1 bank1-1003 75.25 USD
}

// Amounts are exact decimals converted to integer minor units.
func ExampleParseAmount() {
	cents, err := client.ParseAmount("25.50", "USD")
	fmt.Println(cents, err)
	_, err = client.ParseAmount("0.001", "USD")
	fmt.Println(err != nil)
	// Output:
	// 2550 <nil>
	// true
}

// The delays between attempts grow exponentially up to MaxBackoff; without jitter they are
// exact.
func ExampleRetryPolicy_Backoff() {
	p := client.RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 2, Jitter: -1}
	for n := 1; n <= 6; n++ {
		fmt.Print(p.Backoff(n), " ")
	}
	fmt.Println()
	// Output: 100ms 200ms 400ms 800ms 1s 1s
}
