package web_test

// The dashboard in a real browser: Debian's Chromium, driven over the DevTools protocol
// (chromedp), against a whole system of real processes on loopback (internal/cluster).

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/grpchealth"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/paygate/paygate/internal/audit"
	"github.com/paygate/paygate/internal/cluster"
)

// chromiumPath is where Debian's chromium package puts the browser; PAYGATE_CHROMIUM overrides it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PAYGATE_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no Chromium at %s (scripts/tools.sh installs Debian's chromium package; PAYGATE_CHROMIUM names another): %v", p, err)
	}
	return p
}

// screenshotDir is PAYGATE_SCREENSHOT_DIR, or a new temporary directory that outlives the test
// so the screenshots can be looked at.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PAYGATE_SCREENSHOT_DIR")
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "paygate-screenshots-"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots: %s", dir)
	return dir
}

// spkiHash is the base64 SHA-256 of the certificate's public key, the form Chromium's
// --ignore-certificate-errors-spki-list takes.
func spkiHash(t *testing.T, certFile string) string {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// browser is one Chromium tab and the test driving it.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
	n     int
}

// newBrowser starts Chromium with a fresh profile. It trusts exactly the gateway's certificate
// (by its public key), not every certificate: the dev CA is not in the browser's store.
func newBrowser(t *testing.T, c *cluster.Cluster, shots string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, c.CertPath("gateway.pem"))),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	var mu sync.Mutex
	done := false
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(format, args...)
		}
	}
	ctx, cancel := chromedp.NewContext(allocCtx,
		chromedp.WithErrorf(logf),
		chromedp.WithListener(func(ev any) {
			switch ev := ev.(type) {
			case *runtime.EventExceptionThrown:
				d := ev.ExceptionDetails
				desc := d.Text
				if d.Exception != nil {
					desc += " " + d.Exception.Description
				}
				logf("browser: uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, desc)
			case *runtime.EventConsoleAPICalled:
				if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
					var parts []string
					for _, a := range ev.Args {
						parts = append(parts, string(a.Value)+a.Description)
					}
					logf("browser console %s: %s", ev.Type, strings.Join(parts, " "))
				}
			}
		}),
	)
	t.Cleanup(func() {
		mu.Lock()
		done = true
		mu.Unlock()
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath(t), err)
	}
	return &browser{t: t, ctx: ctx, shots: shots}
}

// do runs steps, failing the test (with a screenshot) on error.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	b.shot("failure")
	body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
	b.t.Fatalf(format+"\npage text:\n%s", append(args, body)...)
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is truthy.
func (b *browser) waitFor(what, expr string, d time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.fail("waiting %s for %s (%s): %v", d, what, expr, err)
	}
}

// text returns the text of the first element matching a CSS selector.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").trim()`, sel))
}

// waitText waits until the element matching sel contains want.
func (b *browser) waitText(sel, want string, d time.Duration) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%s to contain %q", sel, want),
		fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").includes(%q)`, sel, want), d)
}

// setValue sets a form control's value and fires its change event.
func (b *browser) setValue(sel, value string) {
	b.t.Helper()
	b.do("set "+sel, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const el = document.querySelector(%q);
		el.value = %q;
		el.dispatchEvent(new Event("change", {bubbles: true}));
	})()`, sel, value)))
}

// fill replaces an input's text by typing it, as a user would.
func (b *browser) fill(sel, text string) {
	b.t.Helper()
	b.setValue(sel, "")
	b.do("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text))
}

// shot saves a full-page screenshot as NN-name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	b.n++
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

// balance returns the figure the page shows for an account.
func (b *browser) balance(account string) string {
	b.t.Helper()
	return b.text(fmt.Sprintf(`#balances [data-account=%q] .balance`, account))
}

func (b *browser) waitBalance(account, want string) {
	b.t.Helper()
	b.waitText(fmt.Sprintf(`#balances [data-account=%q] .balance`, account), want, 15*time.Second)
}

// payForm fills the pay form and returns the payment_id the form will send.
func (b *browser) payForm(from, to, amount, description string) string {
	b.t.Helper()
	b.setValue("#pay-from", from)
	b.fill("#pay-to", to)
	b.fill("#pay-amount", amount)
	b.setValue("#pay-description", "")
	if description != "" {
		b.fill("#pay-description", description)
	}
	return eval[string](b, `document.getElementById("pay-form").dataset.paymentId`)
}

// settle waits until every transaction is resolved and checks the invariants against the ledger
// before the test moved money: the total changed by exactly the deposits minus the withdrawals
// made meanwhile (audit.Conserved) and no account is overdrawn.
func settle(t *testing.T, c *cluster.Cluster, before cluster.Ledger) cluster.Ledger {
	t.Helper()
	after, err := c.WaitSettled(30 * time.Second)
	if err != nil {
		t.Fatalf("ledger did not settle: %v", err)
	}
	if err := audit.Conserved(before, after); err != nil {
		t.Errorf("conservation: %v", err)
	}
	for id, a := range after.Accounts {
		if a.GetBalance() < 0 || a.GetAvailable() < 0 {
			t.Errorf("overdraft: %s has balance %d, available %d", id, a.GetBalance(), a.GetAvailable())
		}
	}
	return after
}

// checkDelta checks that exactly the accounts in want changed, by the amounts in want.
func checkDelta(t *testing.T, what string, before, after cluster.Ledger, want map[string]int64) {
	t.Helper()
	got := map[string]int64{}
	for id, a := range after.Accounts {
		if d := a.GetBalance() - before.Accounts[id].GetBalance(); d != 0 {
			got[id] = d
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: balances changed by %v, want %v", what, got, want)
	}
}

func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole system and a browser")
	}
	chromiumPath(t)
	c := cluster.New(t, cluster.Options{})
	start := settle(t, c, mustAudit(t, c))
	b := newBrowser(t, c, screenshotDir(t))
	base := "https://" + c.WebAddr

	// Sign in: a wrong password first.
	b.do("open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#login-username")))
	b.shot("login")
	b.fill("#login-username", "alice")
	b.fill("#login-password", "not-her-password")
	b.do("submit", chromedp.Click(chromedp.CSS("#login-submit")))
	b.waitText("#login-error", "Wrong username or password.", 10*time.Second)
	b.shot("login-wrong-password")

	// The right one, submitted with the Enter key.
	b.fill("#login-password", "alice-pass-123"+kb.Enter)
	b.waitFor("the balances", `document.querySelector('#balances [data-account="bank1-1001"] .balance') !== null`, 15*time.Second)
	if got := b.balance("bank1-1001"); got != "1,000.00 USD" {
		t.Errorf("bank1-1001 shows %q, want 1,000.00 USD", got)
	}
	if got := b.balance("bank2-2001"); got != "300.00 USD" {
		t.Errorf("bank2-2001 shows %q, want 300.00 USD", got)
	}
	if got := b.text("#total-USD"); got != "1,300.00 USD" {
		t.Errorf("the total shows %q, want 1,300.00 USD", got)
	}
	b.waitText("#live-indicator", "Live", 10*time.Second)
	b.waitText("#history-status", "No payments yet.", 10*time.Second)
	b.shot("dashboard")

	// Pay bob 25.00 with a double click on Pay: one payment_id, so one payment.
	id := b.payForm("bank1-1001", "bank2-2002", "25.00", "lunch")
	b.do("double-click Pay", chromedp.DoubleClick(chromedp.CSS("#pay-submit")))
	b.waitText("#pay-result", "Paid 25.00 USD to bank2-2002.", 20*time.Second)
	b.waitBalance("bank1-1001", "975.00 USD")
	b.waitText("#total-USD", "1,275.00 USD", 10*time.Second)
	b.waitFor("the payment in the history", fmt.Sprintf(`document.querySelector('#history-list [data-payment-id=%q][data-status="succeeded"]') !== null`, id), 10*time.Second)
	b.waitFor("the live status from WatchPayments", fmt.Sprintf(`document.querySelector('#activity-list [data-payment-id=%q][data-status="succeeded"][data-watched="true"]') !== null`, id), 10*time.Second)
	if n := eval[int](b, `document.querySelectorAll("#history-list li").length`); n != 1 {
		t.Errorf("history shows %d payments after a double click, want 1", n)
	}
	if got := eval[string](b, `document.getElementById("pay-form").dataset.paymentId`); got == id {
		t.Errorf("the form kept payment_id %s after the payment succeeded; the next payment needs a new one", id)
	}
	b.shot("paid")
	l1 := settle(t, c, start)
	checkDelta(t, "pay 25.00 with a double click", start, l1, map[string]int64{"bank1-1001": -2500, "bank2-2002": 2500})

	// An overdraft: declined by the bank as insufficient funds, and nothing moves.
	b.payForm("bank2-2001", "bank3-3001", "5000.00", "")
	b.do("click Pay", chromedp.Click(chromedp.CSS("#pay-submit")))
	b.waitText("#pay-result", "insufficient funds", 20*time.Second)
	b.waitText("#pay-amount-error", "More than the account has available.", 5*time.Second)
	b.shot("insufficient-funds")
	l2 := settle(t, c, start)
	checkDelta(t, "an overdraft", l1, l2, map[string]int64{})

	// Mistakes the form or the gateway refuses before anything is recorded.
	b.payForm("bank1-1001", "bank2-2002", "12.345", "")
	b.do("click Pay", chromedp.Click(chromedp.CSS("#pay-submit")))
	b.waitText("#pay-amount-error", "Invalid amount. USD amounts have at most 2 decimal places.", 5*time.Second)
	if focused := eval[string](b, `document.activeElement?.id ?? ""`); focused != "pay-amount" {
		t.Errorf("after an invalid amount the focus is on %q, want pay-amount", focused)
	}
	b.payForm("bank1-1001", "bank9-1234", "1.00", "")
	b.do("click Pay", chromedp.Click(chromedp.CSS("#pay-submit")))
	b.waitText("#pay-result", "Unknown account", 10*time.Second)
	b.payForm("bank1-1001", "bank2-9999", "1.00", "")
	b.do("click Pay", chromedp.Click(chromedp.CSS("#pay-submit")))
	b.waitText("#pay-result", "unknown account", 20*time.Second)
	l3 := settle(t, c, start)
	checkDelta(t, "refused payments", l2, l3, map[string]int64{})

	// A bank that is down is shown as unavailable, not as zero.
	c.Stop("bank2")
	b.do("refresh balances", chromedp.Click(chromedp.CSS("#balances-refresh")))
	b.waitFor("bank2 unavailable", `document.querySelector('#balances [data-bank="bank2"][data-status="unavailable"]') !== null`, 15*time.Second)
	if got := b.text(`#balances [data-account="bank2-2001"]`); !strings.Contains(got, "Unavailable") || strings.Contains(got, "0.00") {
		t.Errorf("bank2-2001 with its bank down shows %q, want Unavailable and no figure", got)
	}
	b.waitText("#balances .total-label", "incomplete", 5*time.Second)
	if got := b.text("#balances .totals"); strings.Count(got, "Total available") != 1 || !strings.Contains(got, "975.00 USD") {
		t.Errorf("the totals with bank2 down show %q, want one total, 975.00 USD, marked incomplete", got)
	}
	b.shot("bank-unavailable")
	c.StartBank("bank2")
	if err := c.WaitBankHealth("bank2", grpchealth.StatusServing, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	b.do("refresh balances", chromedp.Click(chromedp.CSS("#balances-refresh")))
	b.waitBalance("bank2-2001", "300.00 USD")

	// Offline: the gateway stops, the payment waits in the browser, and is sent (once, with the
	// same payment_id) when the gateway is back.
	stopped := time.Now()
	c.Stop("gateway")
	t.Logf("gateway stopped in %s", time.Since(stopped).Round(time.Millisecond))
	offline := b.payForm("bank1-1001", "bank3-3001", "10.00", "while offline")
	b.do("click Pay", chromedp.Click(chromedp.CSS("#pay-submit")))
	b.waitText("#pay-result", "queued", 20*time.Second)
	b.waitFor("the queued payment", fmt.Sprintf(`document.querySelector('#activity-list [data-payment-id=%q][data-status="queued"]') !== null`, offline), 10*time.Second)
	b.waitFor("the offline banner", `!document.getElementById("offline-banner").hidden`, 10*time.Second)
	if !strings.Contains(eval[string](b, `localStorage.getItem("paygate.outbox") ?? ""`), offline) {
		t.Errorf("the queued payment %s is not in localStorage", offline)
	}
	b.shot("queued-offline")
	time.Sleep(3 * time.Second) // a few retries while the gateway is down
	checkDelta(t, "while the gateway is down", l3, mustAudit(t, c), map[string]int64{})

	c.StartGateway()
	b.waitFor("the queued payment to succeed", fmt.Sprintf(`document.querySelector('#activity-list [data-payment-id=%q][data-status="succeeded"]') !== null`, offline), 30*time.Second)
	b.waitText("#pay-result", "The queued payment of 10.00 USD to bank3-3001 was sent and succeeded.", 10*time.Second)
	b.waitBalance("bank1-1001", "965.00 USD")
	b.waitFor("the offline payment in the history", fmt.Sprintf(`document.querySelectorAll('#history-list [data-payment-id=%q][data-status="succeeded"]').length === 1`, offline), 10*time.Second)
	b.waitFor("the outbox to empty", `localStorage.getItem("paygate.outbox") === null`, 10*time.Second)
	b.waitFor("the banner to go", `document.getElementById("offline-banner").hidden`, 10*time.Second)
	b.waitText("#live-indicator", "Live", 15*time.Second)
	b.shot("sent-after-reconnect")
	l4 := settle(t, c, start)
	checkDelta(t, "the payment queued offline", l3, l4, map[string]int64{"bank1-1001": -1000, "bank3-3001": 1000})

	// Phone width.
	b.do("phone viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.do("scroll to top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	if w := eval[int](b, `document.documentElement.scrollWidth`); w > 375 {
		t.Errorf("the page is %d px wide on a 375 px phone screen", w)
	}
	b.shot("phone")
	b.do("desktop viewport", chromedp.ResetViewport())

	// A session the gateway no longer accepts returns to the sign-in page.
	b.do("spoil the token", chromedp.Evaluate[chromedp.Void](`(() => {
		const s = JSON.parse(sessionStorage.getItem("paygate.session"));
		s.token = "pgt_" + "A".repeat(43);
		sessionStorage.setItem("paygate.session", JSON.stringify(s));
	})()`), chromedp.Reload())
	b.waitText("#login-notice", "Your session has expired. Sign in again.", 15*time.Second)
	b.shot("session-expired")

	// Sign in again and out.
	b.fill("#login-username", "alice")
	b.fill("#login-password", "alice-pass-123"+kb.Enter)
	b.waitBalance("bank1-1001", "965.00 USD")
	b.do("sign out", chromedp.Click(chromedp.CSS("#logout")))
	b.waitText("#login-notice", "You have signed out.", 10*time.Second)
	if s := eval[string](b, `sessionStorage.getItem("paygate.session") ?? ""`); s != "" {
		t.Errorf("the session is still stored after signing out: %s", s)
	}

	end := settle(t, c, start)
	checkDelta(t, "the whole test", start, end, map[string]int64{"bank1-1001": -3500, "bank2-2002": 2500, "bank3-3001": 1000})
}

func mustAudit(t *testing.T, c *cluster.Cluster) cluster.Ledger {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestDashboardRegisterInChromium registers erin from the sign-in page: her name is not enough,
// the enrollment code her bank issued is.
func TestDashboardRegisterInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole system and a browser")
	}
	chromiumPath(t)
	c := cluster.New(t, cluster.Options{})
	start := settle(t, c, mustAudit(t, c))
	code, err := c.EnrollmentCode("bank1", "bank1-1004")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, c, screenshotDir(t))
	base := "https://" + c.WebAddr

	b.do("open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#show-register")))
	b.do("show the registration form", chromedp.Click(chromedp.CSS("#show-register")), chromedp.WaitVisible(chromedp.CSS("#register-username")))
	b.shot("register")

	// Checked before sending: a short password, an account without its code.
	b.fill("#register-username", "erin")
	b.fill("#register-password", "short")
	b.do("submit", chromedp.Click(chromedp.CSS("#register-submit")))
	b.waitText("#register-password-error", "at least 10 characters", 5*time.Second)
	b.fill("#register-password", "erin-password-1")
	b.fill("#register-account-0", "bank1-1004")
	b.do("submit", chromedp.Click(chromedp.CSS("#register-submit")))
	b.waitText("#register-account-error-0", "Enter the account and the enrollment code", 5*time.Second)

	// A second account row comes and goes.
	b.do("add an account", chromedp.Click(chromedp.CSS("#register-add-account")), chromedp.WaitVisible(chromedp.CSS("#register-code-1")))
	b.do("remove it", chromedp.Click(chromedp.CSS(`#register-accounts [data-index="1"] .remove-account`)))
	b.waitFor("one account row", `document.querySelectorAll("#register-accounts .account-row").length === 1`, 5*time.Second)

	// Her name and account without her code: refused, on the account's row.
	b.fill("#register-code-0", "AAAA-BBBB-CCCC-DDDD")
	b.do("submit", chromedp.Click(chromedp.CSS("#register-submit")))
	b.waitText("#register-account-error-0", "This account cannot be linked with this code.", 10*time.Second)
	b.shot("register-refused")
	if _, err := c.Login("erin", "erin-password-1"); err == nil {
		t.Fatal("a refused registration created erin")
	}
	// A taken username.
	b.fill("#register-username", "alice")
	b.fill("#register-code-0", code)
	b.do("submit", chromedp.Click(chromedp.CSS("#register-submit")))
	b.waitText("#register-username-error", "This username is taken.", 10*time.Second)

	// With her code, typed in lower case: registered, then she signs in.
	b.fill("#register-username", "erin")
	b.fill("#register-code-0", strings.ToLower(code)+kb.Enter)
	b.waitText("#login-notice", "Your account erin is ready. Sign in.", 15*time.Second)
	if got := eval[string](b, `document.getElementById("login-username").value`); got != "erin" {
		t.Errorf("the sign-in form has username %q, want erin", got)
	}
	b.fill("#login-password", "erin-password-1"+kb.Enter)
	b.waitBalance("bank1-1004", "500.00 USD")
	b.shot("registered")

	checkDelta(t, "registration", start, settle(t, c, start), map[string]int64{})
}
