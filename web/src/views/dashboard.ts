// The signed-in page: balances, pay, live status, the payments received (with their refunds
// and the Refund dialog) and history, and the machinery behind them: the user's events
// (followed with WatchPayments) and the outbox that sends queued payments. An admin whose sign-in passed the second factor also gets the admin
// pages, in the top bar.

import { Code, ConnectError } from "@connectrpc/connect";

import { authClient, isRetryable, isUnreachable, paymentClient, rawMessage, reportUnauthenticated } from "../api";
import { h, replace } from "../dom";
import type { Payment } from "../gen/paygate/gateway/v1/gateway_pb";
import { listQueued, putQueued, type QueuedPayment, removeQueued } from "../outbox";
import { PaymentBook } from "../refunds";
import { isAdmin, type Session } from "../session";
import { ActivityView } from "./activity";
import { AdminPages } from "./admin";
import { BalancesView } from "./balances";
import { HistoryView } from "./history";
import { type PayRequest, type PayResult, PayForm, payErrorText } from "./payform";
import { ReceivedView, refundOutcomeText } from "./received";
import { type RefundOutcome, RefundDialog } from "./refund";

/** How often queued payments are tried again while some are waiting. */
const retryEveryMs = 2000;

export class Dashboard {
  private readonly stop = new AbortController();
  private readonly balances: BalancesView;
  private readonly payForm: PayForm;
  private readonly activity = new ActivityView();
  private readonly history: HistoryView;
  private readonly book = new PaymentBook();
  private readonly received: ReceivedView;
  private readonly refundDialog: RefundDialog;
  /** The user's accounts, as the balances last listed them. */
  private ownAccounts = new Set<string>();
  private readonly banner = h("div", { id: "offline-banner", class: "banner", role: "alert", hidden: true });
  private readonly home: HTMLElement;
  private readonly admin: AdminPages | undefined;
  private readonly sending = new Set<string>();
  private refreshTimer: number | undefined;
  private retryTimer: number | undefined;
  /** The seq of the last event the stream delivered: a reconnect resumes after it. */
  private lastSeq: bigint | undefined;

  constructor(
    root: HTMLElement,
    private readonly session: Session,
    private readonly onSignOut: () => void,
  ) {
    const reachable = (ok: boolean) => this.setReachable(ok);
    this.payForm = new PayForm((req) => this.pay(req));
    this.balances = new BalancesView((accounts) => {
      this.payForm.setAccounts(accounts);
      const ids = new Set(accounts.map((a) => a.accountId));
      if ([...ids].some((id) => !this.ownAccounts.has(id))) {
        this.ownAccounts = ids;
        this.history.redraw();
      }
    }, reachable);
    const refund = (p: Payment) => this.refundDialog.open(p);
    this.refundDialog = new RefundDialog((o) => this.refunded(o));
    this.received = new ReceivedView(this.book, refund, reachable);
    this.history = new HistoryView(reachable, this.book, (a) => this.ownAccounts.has(a), refund);
    this.book.subscribe(() => {
      const shown = this.refundDialog.shown;
      const p = shown && this.book.get(shown);
      if (p) this.refundDialog.update(p);
    });

    const signOut = h("button", { type: "button", id: "logout", class: "button ghost small" }, "Sign out");
    signOut.addEventListener("click", () => void this.signOut());
    if (isAdmin(session)) this.admin = new AdminPages();
    this.home = h(
      "main",
      { class: "grid", id: "home" },
      this.banner,
      session.role === "admin" && !session.secondFactor
        ? h("p", { class: "notice wide-notice", id: "second-factor-notice", role: "status" },
            "You signed in without your authenticator code, so the admin pages are not available. Sign out and sign in again with the code to use them.")
        : null,
      h("div", { class: "col" }, this.balances.el, this.payForm.el),
      h("div", { class: "col" }, this.activity.el, this.received.el, this.history.el),
      this.refundDialog.el,
    );
    replace(
      root,
      h("a", { class: "skip", href: "#pay-from" }, "Skip to the pay form"),
      h(
        "header",
        { class: "topbar" },
        h(
          "div",
          { class: "topbar-inner" },
          h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "paygate"),
          this.admin?.nav,
          h("div", { class: "topbar-right" },
            h("span", { class: "user", id: "user-name" }, session.username),
            session.role === "admin" ? h("span", { class: "badge processing", id: "user-role" }, "Admin") : null,
            signOut),
        ),
      ),
      this.home,
      this.admin ? h("main", { class: "admin-main" }, this.admin.el) : null,
    );
    if (this.admin) {
      window.addEventListener("hashchange", this.route, { signal: this.stop.signal });
      this.route();
    }

    for (const q of listQueued(session.username)) this.activity.queued(q, "queued", "Queued in this browser; sending…");
    void this.balances.refresh();
    void this.history.refresh();
    void this.received.refresh();
    void this.watch();
    void this.flushOutbox();
    window.addEventListener("online", this.onOnline, { signal: this.stop.signal });
  }

  /** Stops the stream and the timers; the outbox stays in localStorage for the next sign-in. */
  destroy(): void {
    this.stop.abort();
    window.clearTimeout(this.refreshTimer);
    window.clearTimeout(this.retryTimer);
  }

  private readonly onOnline = () => void this.flushOutbox();

  /** Shows the admin page of the address, or the balances and payments for any other address. */
  private readonly route = () => {
    const onAdmin = this.admin?.route(location.hash) ?? false;
    this.home.hidden = onAdmin;
    if (onAdmin) window.scrollTo(0, 0);
  };

  private async signOut(): Promise<void> {
    try {
      await authClient.logout({}, { timeoutMs: 5000 });
    } catch {
      // Signing out locally is what matters; the token expires anyway.
    }
    this.onSignOut();
  }

  private setReachable(ok: boolean): void {
    if (this.stop.signal.aborted) return;
    const queued = listQueued(this.session.username).length;
    this.banner.hidden = ok;
    this.banner.textContent = ok
      ? ""
      : `Cannot reach the gateway. ${queued > 0 ? `${queued} payment${queued === 1 ? " is" : "s are"} queued in this browser and will be sent` : "Payments you make are queued in this browser and sent"} when it answers again.`;
    if (ok && queued > 0) void this.flushOutbox();
  }

  /** Refreshes balances and history soon, once for a burst of changes. */
  private refreshSoon(): void {
    window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(() => {
      void this.balances.refresh();
      if (this.history.onFirstPage) void this.history.refresh();
    }, 150);
  }

  /** Records what RefundPayment answered and shows it; the balances and history follow. */
  private refunded(o: RefundOutcome): void {
    this.book.put(o.refund);
    if (o.payment) this.book.put(o.payment);
    this.activity.payment(o.refund, false);
    const { kind, text } = refundOutcomeText(o.refund, o.replayed);
    this.received.showResult(kind, text);
    this.refreshSoon();
  }

  /** Submits a payment: it goes into the outbox first, then is sent. */
  private async pay(req: PayRequest): Promise<PayResult> {
    const q: QueuedPayment = {
      paymentId: req.paymentId,
      username: this.session.username,
      fromAccount: req.fromAccount,
      toAccount: req.toAccount,
      amount: req.amount.toString(),
      currency: req.currency,
      description: req.description,
      queuedAt: Date.now(),
      attempts: 0,
    };
    putQueued(q);
    const r = await this.send(q);
    if (r.kind === "error") this.activity.remove(q.paymentId);
    return r;
  }

  /** Sends one queued payment and reports what became of it. */
  private async send(q: QueuedPayment): Promise<PayResult> {
    if (this.sending.has(q.paymentId)) return { kind: "queued", paymentId: q.paymentId, why: "The payment is already being sent." };
    this.sending.add(q.paymentId);
    this.activity.queued(q, "sending");
    try {
      const resp = await paymentClient.executePayment(
        {
          paymentId: q.paymentId,
          fromAccount: q.fromAccount,
          toAccount: q.toAccount,
          amount: BigInt(q.amount),
          currency: q.currency,
          description: q.description,
        },
        { timeoutMs: 40000, signal: this.stop.signal },
      );
      removeQueued(q.paymentId);
      this.setReachable(true);
      const p = resp.payment as Payment;
      this.activity.payment(p, false);
      this.payForm.settled(p);
      this.refreshSoon();
      return { kind: "outcome", payment: p };
    } catch (e) {
      if (this.stop.signal.aborted) return { kind: "queued", paymentId: q.paymentId, why: "Signed out." };
      const err = ConnectError.from(e);
      if (isRetryable(err) || err.code === Code.Unauthenticated) {
        q.attempts += 1;
        q.lastError = rawMessage(err);
        putQueued(q);
        const why = isUnreachable(err) ? "Cannot reach the gateway." : `Not sent yet: ${rawMessage(err)}.`;
        this.activity.queued(q, "queued", `${why} It will be sent automatically.`);
        if (isUnreachable(err)) this.setReachable(false);
        this.scheduleRetry();
        return { kind: "queued", paymentId: q.paymentId, why };
      }
      removeQueued(q.paymentId);
      this.activity.refused(q, payErrorText(err).text);
      return { kind: "error", err };
    } finally {
      this.sending.delete(q.paymentId);
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== undefined || this.stop.signal.aborted) return;
    this.retryTimer = window.setTimeout(() => {
      this.retryTimer = undefined;
      void this.flushOutbox();
    }, retryEveryMs);
  }

  /** Sends every queued payment of the user, oldest first, with its own payment_id. */
  private async flushOutbox(): Promise<void> {
    for (const q of listQueued(this.session.username)) {
      if (this.stop.signal.aborted) return;
      if (this.sending.has(q.paymentId)) continue;
      const r = await this.send(q);
      if (r.kind === "queued") return; // still unreachable: the retry timer tries again
    }
  }

  /** Keeps a WatchPayments stream open, reconnecting with backoff, and applies its events. */
  private async watch(): Promise<void> {
    let backoff = 500;
    while (!this.stop.signal.aborted) {
      const attempt = new AbortController();
      const onStop = () => attempt.abort();
      this.stop.signal.addEventListener("abort", onStop);
      // connect-go sends the stream's headers with its first event, so "live" is assumed once
      // the call has stood for a moment without failing.
      let assumeLive: number | undefined;
      try {
        // Until the stream has delivered an event it follows from now: what happened before
        // it stood is learnt by listing the newest received payments again once it does (the
        // balances and history refresh with every event, and after a reconnect).
        const fromNow = this.lastSeq === undefined;
        assumeLive = window.setTimeout(() => {
          this.activity.setLive("live");
          if (fromNow) void this.received.refresh();
        }, 1000);
        const from = fromNow ? {} : { after: this.lastSeq };
        for await (const ev of paymentClient.watchPayments(from, { signal: attempt.signal })) {
          this.activity.setLive("live");
          backoff = 500;
          if (ev.event) this.lastSeq = ev.event.seq;
          if (ev.payment) {
            // The stream also tells of payments others make to this user's accounts, and of
            // refunds of the user's payments (their username is empty): those move the
            // balances and are listed under Received and History, but are not "payments you
            // make".
            this.book.put(ev.payment, ev.payment.username === "");
            if (ev.payment.username !== "") {
              this.activity.payment(ev.payment, true);
              this.payForm.settled(ev.payment);
            }
            this.refreshSoon();
          }
        }
      } catch (e) {
        if (this.stop.signal.aborted) return;
        if (ConnectError.from(e).code === Code.Unauthenticated) {
          // The session ended (revoked, expired, the user disabled): back to sign-in.
          reportUnauthenticated(e);
          return;
        }
        if (isUnreachable(e)) this.setReachable(false);
      } finally {
        window.clearTimeout(assumeLive);
        this.stop.signal.removeEventListener("abort", onStop);
      }
      if (this.stop.signal.aborted) return;
      this.activity.setLive("reconnecting");
      await new Promise((r) => window.setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 5000);
      // Catch up on what the stream missed while it was down.
      this.refreshSoon();
      void this.flushOutbox();
    }
  }
}
