// The history of the user's payments, newest first, a page at a time.

import { isUnreachable, paymentClient, rawMessage } from "../api";
import { formatTime, h, replace } from "../dom";
import type { Payment } from "../gen/paygate/gateway/v1/gateway_pb";
import { createdAt, failureText, statusOf } from "../payments";
import { paymentRow } from "./rows";

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

  constructor(private readonly onReachable: (ok: boolean) => void) {
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

  private render(payments: Payment[]): void {
    this.status.textContent = payments.length === 0 && this.page === 0 ? "No payments yet." : "";
    replace(
      this.list,
      payments.map((p) => {
        const status = statusOf(p);
        return paymentRow({
          paymentId: p.paymentId,
          fromAccount: p.fromAccount,
          toAccount: p.toAccount,
          amount: p.amount,
          currency: p.currency,
          description: p.description,
          status,
          note: status === "failed" ? `Failed: ${failureText(p)}` : undefined,
          timeText: formatTime(createdAt(p)),
        });
      }),
    );
  }

  private updatePager(): void {
    this.newer.disabled = this.page === 0 || this.loading;
    this.older.disabled = this.next === "" || this.loading;
    this.pageLabel.textContent = `Page ${this.page + 1}`;
  }
}
