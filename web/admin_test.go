package web_test

// The dashboard's admin pages in Chromium, against a whole system of real processes: an admin
// signs in with a password and a TOTP code, creates a user, opens an account for them and
// deposits into it, finds the user's payment and reads its trail, re-drives a payment left in
// doubt, and reads and verifies the audit log; the customer sees no admin page.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/uuid"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/services/gateway"
)

// docsScreenshots is set (PAYGATE_DOCS_SCREENSHOTS=1) to write the admin pages' screenshots
// into docs/ (docs/admin-*.png, shown in docs/operations.md) as well as the test's directory.
var docsScreenshots = os.Getenv("PAYGATE_DOCS_SCREENSHOTS") == "1"

// docShot takes a screenshot of the whole page, and with PAYGATE_DOCS_SCREENSHOTS=1 writes it
// to docs/admin-<name>.png too.
func (b *browser) docShot(name string) {
	b.t.Helper()
	b.shot("admin-" + name)
	if !docsScreenshots {
		return
	}
	root, err := cluster.ModuleRoot()
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	b.do("scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(root, "docs", "admin-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote %s", path)
}

// newTab opens another tab of b's browser: a session of its own (sessionStorage is per tab).
func (b *browser) newTab() *browser {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("open a tab: %v", err)
	}
	return &browser{t: b.t, ctx: ctx, shots: b.shots, n: 50}
}

// click clicks the first element matching sel.
func (b *browser) click(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// clickNow clicks the element matching sel as it is in the page at this moment. The admin
// tables are drawn again when an answer arrives, so a node found a moment earlier may be gone.
func (b *browser) clickNow(sel string) {
	b.t.Helper()
	if !eval[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.click(); return true; })()`, sel)) {
		b.fail("click %s: no such element", sel)
	}
}

// open goes to an admin page by its link in the top bar and waits for sel.
func (b *browser) open(page, sel string) {
	b.t.Helper()
	b.click("#nav-" + page)
	b.waitFor("the "+page+" page", fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e !== null && e.offsetParent !== null; })()`, sel), 15*time.Second)
}

// gatewayStore is where the cluster's gateway keeps its store.
func gatewayStore(c *cluster.Cluster) gateway.StoreLocation {
	if c.Backend == cluster.Postgres {
		return gateway.StoreLocation{DatabaseURL: c.GatewayDatabaseURL()}
	}
	return gateway.StoreLocation{DataDir: c.GatewayDataDir()}
}

// totp returns secret's code at t, and a code that is wrong around t.
func totp(t *testing.T, secret string, at time.Time) (right, wrong string) {
	t.Helper()
	near := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		code, err := gateway.CurrentTOTP(secret, at.Add(d))
		if err != nil {
			t.Fatal(err)
		}
		near[code] = true
		if d == 0 {
			right = code
		}
	}
	for i := 0; ; i++ {
		if w := fmt.Sprintf("%06d", (123456+i*111111)%1000000); !near[w] {
			return right, w
		}
	}
}

func TestAdminDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole system and a browser")
	}
	chromiumPath(t)
	c := cluster.New(t, cluster.Options{})
	start := settle(t, c, mustAudit(t, c))
	ctx := context.Background()
	enrollment, err := gateway.BootstrapAdmin(ctx, gatewayStore(c), "root", "root-password-1", "test")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, c, screenshotDir(t))
	base := "https://" + c.WebAddr

	// Sign in with a wrong code, then with the right one.
	right, wrong := totp(t, enrollment.Secret, time.Now())
	b.do("open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#login-totp")))
	b.fill("#login-username", "root")
	b.fill("#login-password", "root-password-1")
	b.fill("#login-totp", wrong)
	b.click("#login-submit")
	b.waitText("#login-error", "Wrong username, password or authenticator code.", 10*time.Second)
	b.fill("#login-password", "root-password-1")
	b.fill("#login-totp", right+kb.Enter)
	b.waitFor("the admin links", `document.querySelector("#admin-nav #nav-users") !== null`, 15*time.Second)
	if got := b.text("#user-role"); got != "Admin" {
		t.Errorf("the top bar shows role %q, want Admin", got)
	}

	// Users: the fixtures' users are listed; erin is created with an initial password.
	b.open("users", "#users-table")
	b.waitFor("alice in the list", `document.querySelector('#users-table [data-username="alice"]') !== null`, 10*time.Second)
	b.fill("#create-username", "erin")
	b.fill("#create-password", "short")
	b.click("#create-submit")
	b.waitText("#create-result", "at least 10 characters", 5*time.Second)
	b.fill("#create-password", "erin-initial-1")
	b.click("#create-submit")
	b.waitText("#create-result", "Created erin", 15*time.Second)
	b.waitFor("erin in the list", `document.querySelector('#users-table [data-username="erin"]') !== null`, 10*time.Second)
	b.waitText("#user-name-title", "erin", 10*time.Second)
	b.waitText("#user", "Must change password", 10*time.Second)
	// The server's refusal is shown with its message: erin exists.
	b.fill("#create-username", "erin")
	b.fill("#create-password", "erin-initial-1")
	b.click("#create-submit")
	b.waitFor("the refusal", `document.querySelector('#create-result [data-kind="error"]') !== null`, 10*time.Second)
	if got := b.text("#create-result"); !strings.Contains(got, "erin") {
		t.Errorf("creating erin twice shows %q, want the server's message naming erin", got)
	}
	// A second admin: its TOTP secret is shown once.
	b.fill("#create-username", "ops")
	b.fill("#create-password", "ops-initial-12")
	b.setValue("#create-role", "admin")
	b.click("#create-submit")
	b.waitText("#second-factor-title", "Second factor of ops", 15*time.Second)
	if s := b.text("#second-factor-secret"); !regexp.MustCompile(`^[A-Z2-7]{16,}=*$`).MatchString(s) {
		t.Errorf("the second factor's secret is %q, want base32", s)
	}
	if u := b.text("#second-factor-url"); !strings.HasPrefix(u, "otpauth://totp/") {
		t.Errorf("the otpauth URL is %q", u)
	}
	b.click("#second-factor-hide")
	b.waitFor("the secret gone", `document.getElementById("second-factor").hidden && document.getElementById("second-factor-secret") === null`, 5*time.Second)
	b.clickNow(`#users-table [data-open-user="erin"]`)
	b.waitText("#user-name-title", "erin", 10*time.Second)
	b.docShot("users")

	// Accounts: open one at bank1 for erin, linked to her, and deposit 100.00 into it.
	b.open("accounts", "#accounts-table")
	b.waitFor("bank1's accounts", `document.querySelector('#accounts-table [data-account="bank1-1001"]') !== null`, 10*time.Second)
	b.setValue("#open-bank", "bank1")
	b.fill("#open-holder", "erin")
	b.fill("#open-link", "erin")
	b.click("#open-submit")
	b.waitText("#open-result", "linked to erin", 15*time.Second)
	account := regexp.MustCompile(`bank1-\d+`).FindString(b.text("#open-result"))
	if account == "" {
		b.fail("no account id in %q", b.text("#open-result"))
	}
	row := fmt.Sprintf(`#accounts-table [data-account=%q]`, account)
	b.waitText(row, "erin", 10*time.Second)
	if got := eval[string](b, `document.getElementById("money-account").value`); got != account {
		t.Errorf("after opening %s the deposit form is on %q", account, got)
	}
	// A withdrawal of more than the account has is refused with the server's message.
	b.setValue("#money-kind", "withdraw")
	b.fill("#money-amount", "250.00")
	b.fill("#money-reason", "cash withdrawal")
	b.click("#money-submit")
	b.waitText("#money-result", "insufficient_funds", 15*time.Second)
	// The deposit: one entry, made with the request id the form sent, even with a double click.
	b.setValue("#money-kind", "deposit")
	b.fill("#money-amount", "100.00")
	b.fill("#money-reason", "cash deposit, branch 12")
	b.do("double-click Deposit", chromedp.DoubleClick(chromedp.CSS("#money-submit")))
	b.waitText("#money-result", "Deposited 100.00 USD into "+account+".", 15*time.Second)
	b.waitText(row, "100.00 USD", 10*time.Second)
	entries := fmt.Sprintf(`[...document.querySelectorAll('#entries-table tr[data-entry-id]')].filter((tr) => tr.textContent.includes(%q))`, account)
	b.waitFor("the deposit in the journal", entries+`.length > 0`, 10*time.Second)
	if n := eval[int](b, entries+`.length`); n != 1 {
		t.Errorf("the journal shows %d entries for %s after a double click, want 1", n, account)
	}
	sent := eval[string](b, `document.getElementById("money-result").dataset.requestId`)
	if got := eval[string](b, entries+`[0].dataset.entryId`); got != sent {
		t.Errorf("the deposit's entry id is %s, want the request id the form sent, %s", got, sent)
	}
	if got := eval[string](b, `document.getElementById("money-form").dataset.requestId`); got == sent {
		t.Errorf("the form kept request id %s after the deposit; the next one needs a new one", sent)
	}
	b.docShot("accounts")
	afterDeposit := settleIn(t, c, start, 10000)
	checkDelta(t, "the deposit", start, afterDeposit, map[string]int64{account: 10000})

	// erin, in another tab: her initial password must be changed; she sees no admin page.
	e := b.newTab()
	e.do("open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#login-username")))
	e.fill("#login-username", "erin")
	e.fill("#login-password", "erin-initial-1"+kb.Enter)
	e.waitFor("the change-password form", `document.getElementById("change-new") !== null`, 15*time.Second)
	e.fill("#change-new", "erin-own-password")
	e.fill("#change-again", "erin-own-password"+kb.Enter)
	e.waitText("#login-notice", "Your password is changed.", 15*time.Second)
	e.fill("#login-password", "erin-own-password"+kb.Enter)
	e.waitBalance(account, "100.00 USD")
	if n := eval[int](e, `document.querySelectorAll('#admin-nav, a[href^="#admin"], #admin').length`); n != 0 {
		t.Errorf("a customer's page has %d admin links or pages", n)
	}
	e.do("go to an admin address", chromedp.Evaluate[chromedp.Void](`location.hash = "#admin/users"`))
	time.Sleep(300 * time.Millisecond)
	if n := eval[int](e, `document.querySelectorAll('#users-table, #admin-users').length`); n != 0 || !eval[bool](e, `document.getElementById("balances").offsetParent !== null`) {
		t.Errorf("a customer at #admin/users sees an admin page (%d elements) or not her balances", n)
	}
	// She pays 25.00 to bob.
	paymentID := e.payForm(account, "bank2-2002", "25.00", "first payment")
	e.click("#pay-submit")
	e.waitText("#pay-result", "Paid 25.00 USD to bank2-2002.", 20*time.Second)
	afterPay := settleIn(t, c, start, 10000)
	checkDelta(t, "erin's payment", afterDeposit, afterPay, map[string]int64{account: -2500, "bank2-2002": 2500})

	// Payments: find erin's payment and read its trail.
	b.open("payments", "#search-form")
	b.fill("#search-username", "erin")
	b.click("#search-submit")
	b.waitFor("the search", `document.getElementById("payments-status").textContent === ""`, 10*time.Second)
	link := fmt.Sprintf(`#payments-table [data-trail=%q]`, paymentID)
	b.waitFor("erin's payment, alone", fmt.Sprintf(`document.querySelector(%q) !== null && document.querySelectorAll("#payments-table tr[data-payment-id]").length === 1`, link), 10*time.Second)
	b.clickNow(link)
	b.waitText("#trail-payment-id", paymentID, 10*time.Second)
	b.waitFor("the trail", `document.querySelectorAll("#trail-events li").length > 0`, 10*time.Second)
	kinds := eval[[]string](b, `[...document.querySelectorAll("#trail-events li")].map((li) => li.dataset.kind + (li.dataset.bank ? ":" + li.dataset.bank : ""))`)
	for _, want := range []string{"ADMITTED", "VOTE:bank1", "VOTE:bank2", "DECIDED", "ACKNOWLEDGED:bank1", "ACKNOWLEDGED:bank2"} {
		if !contains(kinds, want) {
			t.Errorf("the trail %v has no %s", kinds, want)
		}
	}
	if got := b.text(`#trail-events li[data-kind="DECIDED"]`); !strings.Contains(got, "COMMIT") || !strings.Contains(got, "the payment's request") {
		t.Errorf("the decision reads %q, want COMMIT by the payment's request", got)
	}
	for _, bank := range []string{"bank1", "bank2"} {
		if got := b.text(fmt.Sprintf(`#trail-banks [data-bank=%q]`, bank)); !strings.Contains(got, "committed") {
			t.Errorf("%s's state reads %q, want committed", bank, got)
		}
	}
	b.docShot("trail")

	// Users again: erin's account unlinked and linked back; erin disabled (her tab is signed
	// out at once and she cannot sign in), enabled again, and given a new initial password.
	b.open("users", "#users-table")
	b.clickNow(`#users-table [data-open-user="erin"]`)
	b.waitFor("erin's accounts", fmt.Sprintf(`document.querySelector('#user-accounts [data-unlink=%q]') !== null`, account), 10*time.Second)
	b.clickNow(fmt.Sprintf(`#user-accounts [data-unlink=%q]`, account))
	b.waitText("#user-result", "is no longer linked to erin", 10*time.Second)
	b.waitText("#user-accounts", "No linked accounts.", 5*time.Second)
	b.fill("#user-link-account", "bank2-2002")
	b.click("#user-link")
	b.waitFor("the refusal of bob's account", `document.querySelector('#user-result [data-kind="error"]') !== null`, 10*time.Second)
	b.fill("#user-link-account", account)
	b.click("#user-link")
	b.waitText("#user-result", account+" is linked to erin.", 10*time.Second)
	b.click("#user-disable")
	b.waitText("#user-result", "Give a reason", 5*time.Second)
	b.fill("#user-disable-reason", "reported a lost phone")
	b.click("#user-disable")
	b.waitText("#user-result", "erin is disabled; 1 session ended.", 10*time.Second)
	e.waitText("#login-notice", "Your user has been disabled by an administrator.", 15*time.Second)
	e.fill("#login-username", "erin")
	e.fill("#login-password", "erin-own-password"+kb.Enter)
	e.waitText("#login-error", "This user is disabled.", 10*time.Second)
	b.click("#user-enable")
	b.waitText("#user-result", "erin can sign in again.", 10*time.Second)
	e.fill("#login-password", "erin-own-password"+kb.Enter)
	e.waitBalance(account, "75.00 USD")
	b.click("#user-reset-generate")
	b.click("#user-reset")
	b.waitText("#user-result", "erin must sign in with the new initial password", 10*time.Second)
	b.waitText("#user", "Must change password", 5*time.Second)
	e.waitFor("erin signed out", `document.getElementById("login-username") !== null`, 15*time.Second)

	// An admin who signs in without the code gets the customer's page and a notice.
	e.fill("#login-username", "root")
	e.fill("#login-password", "root-password-1"+kb.Enter)
	e.waitText("#second-factor-notice", "without your authenticator code", 15*time.Second)
	if n := eval[int](e, `document.querySelectorAll('#admin-nav, a[href^="#admin"], #admin').length`); n != 0 {
		t.Errorf("an admin signed in without the second factor has %d admin links or pages", n)
	}
	e.click("#logout")
	e.waitText("#login-notice", "You have signed out.", 10*time.Second)

	// An account that holds nothing is closed; one with money is not.
	b.open("accounts", "#accounts-table")
	b.setValue("#open-bank", "bank1")
	b.fill("#open-holder", "erin")
	b.click("#open-submit")
	b.waitText("#open-result", "for erin (USD).", 15*time.Second)
	empty := regexp.MustCompile(`bank1-\d+`).FindString(b.text("#open-result"))
	b.waitFor("the new account selected", fmt.Sprintf(`document.getElementById("money-account").value === %q`, empty), 10*time.Second)
	b.fill("#close-reason", "opened by mistake")
	b.click("#close-submit")
	b.waitText("#close-result", empty+" is closed.", 10*time.Second)
	b.waitFor("the account marked closed", fmt.Sprintf(`document.querySelector('#accounts-table [data-account=%q][data-closed="true"]') !== null`, empty), 10*time.Second)
	b.clickNow(row + " [data-select-account]")
	b.fill("#close-reason", "try")
	b.click("#close-submit")
	b.waitText("#close-result", "account_not_empty", 10*time.Second)

	// Operations: a payment whose payee's bank does not answer is in doubt until the bank is
	// back; "Re-drive now" finishes it.
	alice, err := c.Login("alice", "alice-pass-123")
	if err != nil {
		t.Fatal(err)
	}
	beforeDoubt := mustAudit(t, c)
	doubt := inDoubtPayment(t, c, alice)
	b.open("operations", "#banks-table")
	b.click("#operations-refresh")
	doubtRow := fmt.Sprintf(`#in-doubt-table [data-payment-id=%q]`, doubt)
	b.waitFor("the payment in doubt", fmt.Sprintf(`document.querySelector(%q) !== null`, doubtRow), 15*time.Second)
	b.waitText(doubtRow, "bank3", 5*time.Second)
	b.waitFor("bank3 unavailable", `document.querySelector('#banks-table [data-bank="bank3"][data-status="unavailable"]') !== null`, 15*time.Second)
	b.docShot("operations")
	c.Resume("bank3")
	if err := c.WaitBankHealth("bank3", grpchealth.StatusServing, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	b.clickNow(doubtRow + " [data-redrive]")
	b.waitText("#redrive-result", doubt+": finished.", 20*time.Second)
	b.waitFor("the payment out of doubt", fmt.Sprintf(`document.querySelector(%q) === null`, doubtRow), 15*time.Second)
	if got := b.text(`#banks-table [data-bank="bank1"] td:nth-child(8)`); got != "100.00" {
		t.Errorf("bank1's deposits read %q, want 100.00", got)
	}
	afterDoubt := settleIn(t, c, start, 10000)
	checkDelta(t, "the aborted payment", beforeDoubt, afterDoubt, map[string]int64{})

	// Audit log: the actions above, and a verified chain.
	b.open("audit", "#audit-table")
	for _, action := range []string{"bootstrap", "CreateUser", "OpenAccount", "Deposit", "Withdraw", "UnlinkAccount", "LinkAccount",
		"DisableUser", "EnableUser", "ResetPassword", "CloseAccount", "RedrivePayment"} {
		b.waitFor("the audit entry "+action, fmt.Sprintf(`document.querySelector('#audit-table tr[data-action=%q]') !== null`, action), 10*time.Second)
	}
	if got := b.text(`#audit-table tr[data-action="Deposit"]`); !strings.Contains(got, "root") || !strings.Contains(got, "account:"+account) {
		t.Errorf("the deposit's audit entry reads %q, want root and account:%s", got, account)
	}
	if got := b.text(`#audit-table tr[data-action="Withdraw"]`); !strings.Contains(got, "failed precondition") {
		t.Errorf("the refused withdrawal's audit entry reads %q, want failed precondition", got)
	}
	b.click("#audit-verify")
	b.waitText("#verify-result", "Chain OK", 15*time.Second)
	b.docShot("audit")
	b.fill("#audit-actor", "test")
	b.click("#audit-search")
	b.waitFor("only the bootstrap", `document.querySelectorAll("#audit-table tr[data-seq]").length === 1 && document.querySelector('#audit-table tr[data-action="bootstrap"]') !== null`, 10*time.Second)

	// Phone width: the admin pages fit; wide tables scroll inside their cards.
	b.do("phone viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	for _, page := range []string{"operations", "accounts", "audit"} {
		b.clickNow("#nav-" + page)
		time.Sleep(300 * time.Millisecond)
		if w := eval[int](b, `document.documentElement.scrollWidth`); w > 375 {
			t.Errorf("the %s page is %d px wide on a 375 px phone screen", page, w)
		}
	}
	b.shot("admin-phone")
	b.do("desktop viewport", chromedp.ResetViewport())

	// The whole test: 100.00 came in by the deposit; nothing else was made or lost.
	end := settleIn(t, c, start, 10000)
	checkDelta(t, "the whole test", start, end, map[string]int64{account: 7500, "bank2-2002": 2500})
}

// inDoubtPayment pays 7.00 from alice's bank1-1001 to bank3-3001 with bank3 paused: the
// prepare is not answered, the payment fails at its deadline, and the abort cannot reach bank3,
// so the payment stays in doubt, awaiting bank3's acknowledgement, until bank3 is resumed. It
// returns the payment's id.
func inDoubtPayment(t *testing.T, c *cluster.Cluster, alice *cluster.User) string {
	t.Helper()
	c.Pause("bank3")
	id := uuid.NewString()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := alice.Payments.ExecutePayment(ctx, connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
		PaymentId: id, FromAccount: "bank1-1001", ToAccount: "bank3-3001", Amount: 700, Currency: "USD", Description: "to a paused bank",
	}))
	if err != nil {
		t.Fatalf("pay to a paused bank: %v", err)
	}
	if got := resp.Msg.GetPayment().GetStatus(); got != gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
		t.Fatalf("a payment to a paused bank is %v, want FAILED", got)
	}
	return id
}

// settleIn settles the system and checks conservation as settle does (audit.Conserved), and
// that between before and now exactly deposited came in, all of it by deposits.
func settleIn(t *testing.T, c *cluster.Cluster, before cluster.Ledger, deposited int64) cluster.Ledger {
	t.Helper()
	after := settle(t, c, before)
	if got := after.Total - before.Total; got != deposited {
		t.Errorf("the total changed by %d, want %d", got, deposited)
	}
	if got := (after.Deposited - after.Withdrawn) - (before.Deposited - before.Withdrawn); got != deposited {
		t.Errorf("deposits minus withdrawals changed by %d, want %d", got, deposited)
	}
	return after
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
