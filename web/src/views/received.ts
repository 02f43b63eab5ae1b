// Payments others made to the user's accounts, newest first, each with what is refunded of it,
// its refunds, and a Refund button while a succeeded payment has something left to refund.
// The page learns of them from the user's events (PaymentBook).

import { h, replace } from "../dom";
import type { Payment } from "../gen/paygate/gateway/v1/gateway_pb";
import { formatAmount } from "../money";
import { leftToRefund, type PaymentBook } from "../refunds";
import { paymentRow, refundLines, rowOf } from "./rows";

const maxRows = 10;

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
  private readonly more = h("p", { class: "muted small", id: "received-more" });
  private readonly result = h("div", { id: "received-result", role: "status", "aria-live": "polite" });

  constructor(
    private readonly book: PaymentBook,
    private readonly onRefund: (p: Payment) => void,
  ) {
    this.el = h(
      "section",
      { class: "card", id: "received", "aria-labelledby": "received-title" },
      h("header", { class: "card-head" }, h("h2", { id: "received-title" }, "Received")),
      this.result,
      this.empty,
      this.list,
      this.more,
    );
    book.subscribe(() => this.render());
    this.render();
  }

  /** Says what became of a refund (its outcome, or why it was refused). */
  showResult(kind: "success" | "error" | "info", text: string): void {
    replace(this.result, h("p", { class: `result ${kind}`, "data-kind": kind }, text));
  }

  private render(): void {
    const all = this.book.received();
    this.empty.hidden = all.length > 0;
    this.more.textContent = all.length > maxRows ? `${all.length - maxRows} older payments are not shown.` : "";
    replace(
      this.list,
      all.slice(0, maxRows).map((p) => {
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
