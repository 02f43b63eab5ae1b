// Payments others made to the user's accounts, newest first, each with what is refunded of it,
// its refunds, and a Refund button while a succeeded payment has something left to refund.
// The card lists them with ListPayments (received), a page at a time: the newest page when
// the page opens (and again after the stream was down), older ones on demand. The user's
// events (WatchPayments) bring the new ones and every change, through the PaymentBook.

import { isUnreachable, paymentClient, rawMessage } from "../api";
import { h, replace } from "../dom";
import type { Payment } from "../gen/paygate/gateway/v1/gateway_pb";
import { formatAmount } from "../money";
import { leftToRefund, type PaymentBook } from "../refunds";
import { paymentRow, refundLines, rowOf } from "./rows";

/** How many received payments a ListPayments call asks for. */
const pageSize = 10;

/** A Refund button for p, or null when nothing of it can be refunded. */
export function refundButton(p: Payment, onRefund: (p: Payment) => void): HTMLButtonElement | null {
  if (leftToRefund(p) === 0n) return null;
  const b = h("button", { type: "button", class: "button ghost small refund-button", "data-payment-id": p.paymentId }, "Refund");
  b.addEventListener("click", () => onRefund(p));
  return b;
}

export class ReceivedView {
  readonly el: HTMLElement;
  private readonly list = h("ul", { class: "payments", id: "received-list" });
  private readonly empty = h("p", { class: "muted small", id: "received-empty" }, "Payments others make to your accounts appear here.");
  private readonly status = h("p", { class: "muted small", id: "received-status", "aria-live": "polite" });
  private readonly older = h("button", { type: "button", class: "button ghost small", id: "received-older" }, "Show older");
  private readonly result = h("div", { id: "received-result", role: "status", "aria-live": "polite" });
  /** The page token of the next older page; "" when the oldest was listed. */
  private next = "";
  /** Whether a page older than the newest was listed (its token is kept over a refresh). */
  private pastFirst = false;
  private loaded = false;
  private loading = false;
  /** What was asked for while a page was being listed: the newest page again, an older one. */
  private wantNewest = false;
  private wantOlder = false;

  constructor(
    private readonly book: PaymentBook,
    private readonly onRefund: (p: Payment) => void,
    private readonly onReachable: (ok: boolean) => void,
  ) {
    this.older.addEventListener("click", () => void this.load(true));
    this.el = h(
      "section",
      { class: "card", id: "received", "aria-labelledby": "received-title" },
      h("header", { class: "card-head" }, h("h2", { id: "received-title" }, "Received")),
      this.result,
      this.empty,
      this.status,
      this.list,
      h("nav", { class: "pager", "aria-label": "Older received payments" }, this.older),
    );
    book.subscribe(() => this.render());
    this.render();
  }

  /** Says what became of a refund (its outcome, or why it was refused). */
  showResult(kind: "success" | "error" | "info", text: string): void {
    replace(this.result, h("p", { class: `result ${kind}`, "data-kind": kind }, text));
  }

  /**
   * Lists the newest page again (when the page opens, and after the stream was down, to learn
   * what it missed). Older pages listed already stay, and so does the token after them.
   */
  refresh(): Promise<void> {
    return this.load(false);
  }

  /**
   * Lists the newest page, or the page older than those listed, into the book. One listing
   * at a time: what is asked for meanwhile runs after it, the newest page first.
   */
  private async load(older: boolean): Promise<void> {
    if (older) this.wantOlder = true;
    else this.wantNewest = true;
    if (this.loading) return;
    this.loading = true;
    this.el.setAttribute("aria-busy", "true");
    try {
      while (this.wantNewest || (this.wantOlder && this.next !== "")) {
        const older = !this.wantNewest;
        if (older) this.wantOlder = false;
        else this.wantNewest = false;
        try {
          const resp = await paymentClient.listPayments(
            { pageSize, pageToken: older ? this.next : "", received: true },
            { timeoutMs: 15000 },
          );
          this.onReachable(true);
          // Refunds of the user's payments are among them: the book files them under the
          // payment they refund, the others under Received.
          for (const p of resp.payments) this.book.put(p, true);
          if (older) {
            this.pastFirst = true;
            this.next = resp.nextPageToken;
          } else if (!this.pastFirst) {
            this.next = resp.nextPageToken;
          }
          this.loaded = true;
          this.status.textContent = "";
        } catch (e) {
          if (isUnreachable(e)) this.onReachable(false);
          this.status.textContent = isUnreachable(e) ? "Cannot reach the gateway." : `Received payments could not be loaded: ${rawMessage(e)}`;
          this.wantNewest = this.wantOlder = false;
        }
        this.render();
      }
      this.wantOlder = false;
    } finally {
      this.loading = false;
      this.el.removeAttribute("aria-busy");
      this.render();
    }
  }

  private render(): void {
    const all = this.book.received();
    this.empty.hidden = all.length > 0 || !this.loaded;
    this.older.hidden = this.next === "";
    replace(
      this.list,
      all.map((p) => {
        const refunds = this.book.refundsOf(p.paymentId);
        return paymentRow(
          { ...rowOf(p, "in"), extra: [...refundLines(p, refunds), refundButton(p, this.onRefund)] },
          { "data-refunded": p.refundedAmount.toString(), "data-left": leftToRefund(p).toString() },
        );
      }),
    );
  }
}

/** The words for a refund's outcome, for the Received card. */
export function refundOutcomeText(refund: Payment, replayed: boolean): { kind: "success" | "error" | "info"; text: string } {
  const what = `${formatAmount(refund.amount, refund.currency)} to ${refund.toAccount}`;
  const again = replayed ? " (it had been made already)" : "";
  switch (rowOf(refund).status) {
    case "succeeded":
      return { kind: "success", text: `Refunded ${what}${again}.` };
    case "failed":
      return { kind: "error", text: `The refund of ${what} failed${again}. No money moved.` };
    default:
      return { kind: "info", text: `The refund of ${what} is processing; its outcome shows here when it is decided.` };
  }
}
