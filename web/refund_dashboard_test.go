package web_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
)

// newUUID returns a random (version 4) UUID, for the payments and refunds the test makes
// through the API.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// apiPay makes a payment as u through the API and fails the test unless it succeeds.
func apiPay(t *testing.T, u *cluster.User, from, to string, amount int64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := newUUID()
	resp, err := u.Payments.ExecutePayment(ctx, connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: id, FromAccount: from, ToAccount: to, Amount: amount, Currency: "USD",
	}))
	if err != nil {
		t.Fatalf("pay %s → %s %d: %v", from, to, amount, err)
	}
	if s := resp.Msg.GetPayment().GetStatus(); s != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
		t.Fatalf("pay %s → %s %d: %v", from, to, amount, s)
	}
	return id
}

// present is a JavaScript expression true once an element matches the CSS selector sel.
func present(sel string) string {
	return fmt.Sprintf(`document.querySelector(%q) !== null`, sel)
}

// received is the CSS selector of a payment's row under Received.
func received(paymentID string) string {
	return fmt.Sprintf(`#received-list [data-payment-id=%q]`, paymentID)
}

// TestDashboardRefundInChromium: bob refunds payments alice made to his accounts with the
// Refund button, partly and in full, once with a dialog another refund made stale (refused:
// more than is left, nothing moves) and once while the gateway is down (sent again from the
// same dialog, with the same refund_id, when it is back: refunded once). Balances, refunded
// amounts and refunds are checked on bob's page and then on alice's, and the ledgers after
// each step.
func TestDashboardRefundInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole system and a browser")
	}
	chromiumPath(t)
	c := cluster.New(t, cluster.Options{})
	start := settle(t, c, mustAudit(t, c))
	alice, err := c.Login("alice", "alice-pass-123")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := c.Login("bob", "bob-pass-456")
	if err != nil {
		t.Fatal(err)
	}

	// Paid before bob's page opens: the page finds it among his events (ListEvents).
	first := apiPay(t, alice, "bank1-1001", "bank2-2002", 2500)
	l0 := settle(t, c, start)

	b := newBrowser(t, c, screenshotDir(t))
	b.do("open the dashboard", chromedp.Navigate("https://"+c.WebAddr+"/"), chromedp.WaitVisible(chromedp.CSS("#login-username")))
	b.fill("#login-username", "bob")
	b.fill("#login-password", "bob-pass-456"+kb.Enter)
	b.waitBalance("bank2-2002", "825.00 USD")
	b.waitFor("the payment received before the page opened", present(received(first)+`[data-status="succeeded"] .refund-button`), 15*time.Second)
	if got := b.text(received(first) + " .payment-title"); got != "From bank1-1001" {
		t.Errorf("the received payment is titled %q, want From bank1-1001", got)
	}
	b.waitText("#live-indicator", "Live", 10*time.Second)

	// Paid while the page is open: the stream brings it.
	second := apiPay(t, alice, "bank2-2001", "bank3-3001", 500)
	b.waitFor("the payment received while the page is open", present(received(second)+`[data-status="succeeded"] .refund-button`), 15*time.Second)
	b.waitBalance("bank3-3001", "455.75 USD")
	b.shot("received")
	l1 := settle(t, c, l0)

	// A partial refund: the dialog offers all that is left; bob asks for 10.00.
	b.do("click Refund", chromedp.Click(chromedp.CSS(received(first)+" .refund-button")))
	b.waitFor("the refund dialog", `document.getElementById("refund-dialog").open`, 5*time.Second)
	if got := eval[string](b, `document.getElementById("refund-amount").value`); got != "25.00" {
		t.Errorf("the dialog offers %q, want 25.00 (all that is left)", got)
	}
	refund1 := eval[string](b, `document.getElementById("refund-form").dataset.refundId`)
	b.fill("#refund-amount", "10.00")
	b.fill("#refund-reason", "returned item")
	b.shot("refund-dialog")
	b.do("click Refund in the dialog", chromedp.Click(chromedp.CSS("#refund-submit")))
	b.waitText("#received-result", "Refunded 10.00 USD to bank1-1001.", 20*time.Second)
	b.waitFor("the dialog to close", `!document.getElementById("refund-dialog").open`, 5*time.Second)
	b.waitBalance("bank2-2002", "815.00 USD")
	b.waitFor("the refunded amount", present(received(first)+`[data-refunded="1000"]`), 10*time.Second)
	b.waitText(received(first)+" .refunded", "Refunded 10.00 USD of 25.00 USD", 5*time.Second)
	b.waitFor("the refund under the payment", present(fmt.Sprintf(`%s [data-refund-id=%q][data-status="succeeded"]`, received(first), refund1)), 10*time.Second)
	b.waitFor("the refund in the history", present(fmt.Sprintf(`#history-list [data-payment-id=%q][data-direction="refund"]`, refund1)), 10*time.Second)
	b.shot("refunded-partly")
	l2 := settle(t, c, l1)
	checkDelta(t, "a refund of 10.00", l1, l2, map[string]int64{"bank1-1001": 1000, "bank2-2002": -1000})

	// A dialog made stale: it offers 15.00, then 8.00 is refunded elsewhere (another tab, the
	// API). Its 15.00 is more than is left: refused, and nothing moves.
	b.do("click Refund", chromedp.Click(chromedp.CSS(received(first)+" .refund-button")))
	b.waitFor("the refund dialog", `document.getElementById("refund-dialog").open`, 5*time.Second)
	refund2 := eval[string](b, `document.getElementById("refund-form").dataset.refundId`)
	if refund2 == refund1 {
		t.Errorf("a new dialog reused refund_id %s", refund1)
	}
	if got := eval[string](b, `document.getElementById("refund-amount").value`); got != "15.00" {
		t.Errorf("the dialog offers %q, want 15.00 (all that is left)", got)
	}
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := bob.Payments.RefundPayment(ctx, connect.NewRequest(&gatewayv1.RefundPaymentRequest{RefundId: newUUID(), PaymentId: first, Amount: 800}))
		if err != nil {
			t.Fatalf("refund 8.00 through the API: %v", err)
		}
		if s := resp.Msg.GetRefund().GetStatus(); s != gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED {
			t.Fatalf("refund 8.00 through the API: %v", s)
		}
	}()
	b.waitText("#refund-amount-hint", "Left to refund: 7.00 USD.", 10*time.Second)
	b.do("click Refund in the dialog", chromedp.Click(chromedp.CSS("#refund-submit")))
	b.waitText("#refund-result", "more than is left to refund", 20*time.Second)
	b.waitText("#refund-amount-error", "At most 7.00 USD is left to refund.", 5*time.Second)
	b.shot("refund-refused")
	if got := eval[string](b, `document.getElementById("refund-form").dataset.refundId`); got != refund2 {
		t.Errorf("after a refusal the dialog changed refund_id %s to %s; nothing was recorded, the same one goes again", refund2, got)
	}
	l3 := settle(t, c, l2)
	checkDelta(t, "a refund of 8.00 through the API, then one refused", l2, l3, map[string]int64{"bank1-1001": 800, "bank2-2002": -800})

	// The same dialog, a smaller amount: refunded.
	b.fill("#refund-amount", "4.00")
	b.do("click Refund in the dialog", chromedp.Click(chromedp.CSS("#refund-submit")))
	b.waitText("#received-result", "Refunded 4.00 USD to bank1-1001.", 20*time.Second)
	b.waitBalance("bank2-2002", "803.00 USD")
	b.waitText(received(first)+" .refunded", "Refunded 22.00 USD of 25.00 USD", 10*time.Second)
	b.waitFor("three refunds under the payment", present(received(first)+` .refunds li[data-status="succeeded"]`+":nth-child(3)"), 10*time.Second)
	b.waitFor("the Refund button, 3.00 being left", present(received(first)+` .refund-button`), 5*time.Second)
	l4 := settle(t, c, l3)
	checkDelta(t, "a refund of 4.00", l3, l4, map[string]int64{"bank1-1001": 400, "bank2-2002": -400})

	// The whole second payment while the gateway is down: the outcome is unknown, the dialog
	// keeps its refund_id, and submitting again once the gateway is back refunds it once.
	b.do("click Refund", chromedp.Click(chromedp.CSS(received(second)+" .refund-button")))
	b.waitFor("the refund dialog", `document.getElementById("refund-dialog").open`, 5*time.Second)
	refund3 := eval[string](b, `document.getElementById("refund-form").dataset.refundId`)
	if got := eval[string](b, `document.getElementById("refund-amount").value`); got != "5.00" {
		t.Errorf("the dialog offers %q, want 5.00", got)
	}
	c.Stop("gateway")
	b.do("click Refund in the dialog", chromedp.Click(chromedp.CSS("#refund-submit")))
	b.waitText("#refund-result", "Cannot reach the gateway", 30*time.Second)
	b.shot("refund-unreachable")
	checkDelta(t, "while the gateway is down", l4, mustAudit(t, c), map[string]int64{})
	c.StartGateway()
	b.do("click Refund in the dialog again", chromedp.Click(chromedp.CSS("#refund-submit")))
	b.waitText("#received-result", "Refunded 5.00 USD to bank2-2001.", 30*time.Second)
	if got := eval[string](b, `document.getElementById("refund-form").dataset.refundId`); got != refund3 {
		t.Errorf("the retry sent refund_id %s, the first attempt %s", got, refund3)
	}
	b.waitBalance("bank3-3001", "450.75 USD")
	b.waitText(received(second)+" .refunded", "Refunded in full", 15*time.Second)
	b.waitFor("no Refund button on a payment refunded in full", `document.querySelector('`+received(second)+` .refund-button') === null`, 5*time.Second)
	if n := eval[int](b, `document.querySelectorAll('`+received(second)+` .refunds li').length`); n != 1 {
		t.Errorf("the second payment shows %d refunds, want 1", n)
	}
	b.shot("refunded-in-full")
	l5 := settle(t, c, l4)
	checkDelta(t, "a refund in full sent twice", l4, l5, map[string]int64{"bank2-2001": 500, "bank3-3001": -500})

	// Alice's page: her payments with what was refunded, the refunds, and no Refund button
	// (she is not the payee).
	b.do("sign out", chromedp.Click(chromedp.CSS("#logout")))
	b.waitText("#login-notice", "You have signed out.", 10*time.Second)
	b.fill("#login-username", "alice")
	b.fill("#login-password", "alice-pass-123"+kb.Enter)
	b.waitBalance("bank1-1001", "997.00 USD")
	b.waitBalance("bank2-2001", "300.00 USD")
	history := func(id string) string { return fmt.Sprintf(`#history-list [data-payment-id=%q]`, id) }
	b.waitText(history(first)+" .refunded", "Refunded 22.00 USD of 25.00 USD", 15*time.Second)
	b.waitText(history(second)+" .refunded", "Refunded in full", 15*time.Second)
	b.waitFor("the refunds of her first payment", present(history(first)+` .refunds li:nth-child(3)`), 10*time.Second)
	if n := eval[int](b, `document.querySelectorAll("#history-list .refund-button, #received-list .refund-button").length`); n != 0 {
		t.Errorf("alice's page offers %d Refund buttons; only the payee refunds", n)
	}
	b.shot("payer")

	// More received payments than a page: carol pays alice 0.01 eleven times. After a reload
	// the card lists the newest ten (ListPayments with received, not her whole event log),
	// and Show older the eleventh.
	carol, err := c.Login("carol", "carol-pass-789")
	if err != nil {
		t.Fatal(err)
	}
	var cents []string
	for range 11 {
		cents = append(cents, apiPay(t, carol, "bank1-1002", "bank1-1001", 1))
	}
	rows := `document.querySelectorAll("#received-list > li").length`
	b.do("reload alice's page", chromedp.Reload())
	b.waitBalance("bank1-1001", "997.11 USD")
	b.waitFor("the newest page of received payments", present(received(cents[10]))+` && `+rows+` === 10`, 15*time.Second)
	b.waitFor("Show older", `!document.getElementById("received-older").hidden`, 5*time.Second)
	if eval[bool](b, present(received(cents[0]))) {
		t.Errorf("the oldest of eleven received payments is listed before Show older")
	}
	b.do("click Show older", chromedp.Click(chromedp.CSS("#received-older")))
	b.waitFor("the older page", present(received(cents[0]))+` && `+rows+` === 11`, 15*time.Second)
	b.waitFor("no Show older after the oldest", `document.getElementById("received-older").hidden`, 5*time.Second)
	order := eval[[]string](b, `[...document.querySelectorAll("#received-list > li")].map((li) => li.dataset.paymentId)`)
	for i, id := range order {
		if want := cents[10-i]; id != want {
			t.Errorf("received row %d is %s, want %s (newest first)", i, id, want)
		}
	}

	end := settle(t, c, start)
	checkDelta(t, "the whole test", start, end, map[string]int64{"bank1-1001": -300 + 11, "bank2-2002": 300, "bank1-1002": -11})
}
