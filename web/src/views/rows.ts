// One payment as a list row, shared by Live status and History.

import { h } from "../dom";
import { formatAmount } from "../money";
import { type Status, statusLabel } from "../payments";

export interface RowData {
  paymentId: string;
  fromAccount: string;
  toAccount: string;
  amount: bigint;
  currency: string;
  description: string;
  status: Status;
  /** Why it failed, or why it is queued. */
  note?: string;
  time?: Date;
  timeText: string;
}

export function paymentRow(d: RowData, attrs: Record<string, string> = {}): HTMLLIElement {
  return h(
    "li",
    { class: `payment ${d.status}`, "data-payment-id": d.paymentId, "data-status": d.status, ...attrs },
    h(
      "div",
      { class: "payment-main" },
      h("div", { class: "payment-title" }, h("span", { class: "muted" }, "To "), h("span", { class: "mono" }, d.toAccount)),
      h(
        "div",
        { class: "payment-meta muted small" },
        `from ${d.fromAccount}`,
        d.timeText ? ` · ${d.timeText}` : "",
        d.description ? ` · ${d.description}` : "",
      ),
      d.note ? h("div", { class: `payment-note small ${d.status === "failed" ? "error-text" : "muted"}` }, d.note) : null,
    ),
    h(
      "div",
      { class: "payment-side" },
      h("div", { class: "payment-amount" }, formatAmount(d.amount, d.currency)),
      h("span", { class: `badge ${d.status}` }, statusLabel[d.status]),
    ),
  );
}
