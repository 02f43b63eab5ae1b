// The history of the user's payments, newest first, a page at a time: the payments they made,
// each with what was refunded of it and its refunds, and the refunds they made.

import { isUnreachable, paymentClient, rawMessage } from "../api";
import { h, replace } from "../dom";
import type { Payment } from "../gen/paygate/gateway/v1/gateway_pb";
import type { PaymentBook } from "../refunds";
import { refundButton } from "./received";
import { paymentRow, refundLines, rowOf } from "./rows";

const pageSize = 8;

export class HistoryView {
  readonly el: HTMLElement;
  private readonly list = h("ul", { class: "payments", id: "history-list" });
  private readonly status = h("p", { class: "muted small", id: "history-status", "aria-live": "polite" });
  private readonly newer = h("button", { type: "button", class: "button ghost small", id: "history-newer" }, "← Newer");
  private readonly older = h("button", { type: "button", class: "button ghost small", id: "history-older" }, "Older →");
  private readonly pageLabel = h("span", { class: "muted small", id: "history-page" });
  /** tokens[i] is the page token of page i (tokens[0] is ""). */
  private tokens: string[] = [""];
  private page = 0;
  private next = "";
  private loading = false;
  private again = false;
  /** The page last listed, for drawing it again when the book learns of refunds. */
  private shown: Payment[] = [];

  /**
   * owns says whether an account is the user's: a payment they made to their own account is
   * theirs to refund too.
   */
  constructor(
    private readonly onReachable: (ok: boolean) => void,
    private readonly book: PaymentBook,
    private readonly owns: (account: string) => boolean,
    private readonly onRefund: (p: Payment) => void,
  ) {
    book.subscribe(() => this.render(this.shown));
    this.newer.addEventListener("click", () => {
      if (this.page > 0) {
        this.page -= 1;
        void this.refresh();
      }
    });
    this.older.addEventListener("click", () => {
      if (this.next) {
        this.tokens[this.page + 1] = this.next;
        this.page += 1;
        void this.refresh();
      }
    });
    this.el = h(
      "section",
      { class: "card", id: "history", "aria-labelledby": "history-title" },
      h("header", { class: "card-head" }, h("h2", { id: "history-title" }, "History")),
      this.status,
      this.list,
      h("nav", { class: "pager", "aria-label": "History pages" }, this.newer, this.pageLabel, this.older),
    );
    this.updatePager();
  }

  /** Whether the newest page is shown (new payments appear there). */
  get onFirstPage(): boolean {
    return this.page === 0;
  }

  async refresh(): Promise<void> {
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = true;
    this.el.setAttribute("aria-busy", "true");
    try {
      do {
        this.again = false;
        try {
          const resp = await paymentClient.listPayments({ pageSize, pageToken: this.tokens[this.page] ?? "" }, { timeoutMs: 15000 });
          this.onReachable(true);
          this.next = resp.nextPageToken;
          // The refunds the user made are payments of theirs: the book files them under the
          // payment they refund, for the Received card.
          for (const p of resp.payments) if (p.refundOf !== "") this.book.put(p);
          this.render(resp.payments);
        } catch (e) {
          if (isUnreachable(e)) this.onReachable(false);
          this.status.textContent = isUnreachable(e) ? "Cannot reach the gateway." : `History could not be loaded: ${rawMessage(e)}`;
        }
      } while (this.again);
    } finally {
      this.loading = false;
      this.el.removeAttribute("aria-busy");
      this.updatePager();
    }
  }

  /** Draws the listed page again (what the page knows of the user's accounts changed). */
  redraw(): void {
    this.render(this.shown);
  }

  private render(payments: Payment[]): void {
    this.shown = payments;
    this.status.textContent = payments.length === 0 && this.page === 0 ? "No payments yet." : "";
    replace(
      this.list,
      payments.map((listed) => {
        const p = this.book.freshest(listed);
        const extra = p.refundOf === "" ? [...refundLines(p, this.book.refundsOf(p.paymentId)), this.owns(p.toAccount) ? refundButton(p, this.onRefund) : null] : [];
        return paymentRow({ ...rowOf(p), extra }, { "data-refunded": p.refundedAmount.toString() });
      }),
    );
  }

  private updatePager(): void {
    this.newer.disabled = this.page === 0 || this.loading;
    this.older.disabled = this.next === "" || this.loading;
    this.pageLabel.textContent = `Page ${this.page + 1}`;
  }
}
