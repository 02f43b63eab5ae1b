// One payment as a list row, shared by Live status, Received and History, and the lines about
// its refunds.

import { type Child, formatTime, h } from "../dom";
import type { Payment } from "../gen/paygate/gateway/v1/gateway_pb";
import { formatAmount } from "../money";
import { createdAt, failureText, type Status, statusLabel, statusOf } from "../payments";

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
  /**
   * How the row is titled: "out" (the default), a payment the user made, by its payee; "in",
   * a payment made to the user's account, by its payer; "refund", a refund, by the account
   * it gives money back to.
   */
  direction?: "out" | "in" | "refund";
  /** Of a refund: the payment_id of the payment it refunds. */
  refundOf?: string;
  /** More under the payment's own lines: its refunds, a Refund button. */
  extra?: Child[];
}

export function paymentRow(d: RowData, attrs: Record<string, string> = {}): HTMLLIElement {
  const direction = d.direction ?? "out";
  const title =
    direction === "in"
      ? [h("span", { class: "muted" }, "From "), h("span", { class: "mono" }, d.fromAccount)]
      : [h("span", { class: "muted" }, direction === "refund" ? "Refund to " : "To "), h("span", { class: "mono" }, d.toAccount)];
  return h(
    "li",
    { class: `payment ${d.status}`, "data-payment-id": d.paymentId, "data-status": d.status, "data-direction": direction, ...attrs },
    h(
      "div",
      { class: "payment-main" },
      h("div", { class: "payment-title" }, title),
      h(
        "div",
        { class: "payment-meta muted small" },
        direction === "in" ? `to ${d.toAccount}` : `from ${d.fromAccount}`,
        d.timeText ? ` · ${d.timeText}` : "",
        d.description ? ` · ${d.description}` : "",
      ),
      d.refundOf ? h("div", { class: "payment-meta muted small" }, "refund of ", h("span", { class: "mono", "data-refund-of": d.refundOf }, d.refundOf)) : null,
      d.note ? h("div", { class: `payment-note small ${d.status === "failed" ? "error-text" : "muted"}` }, d.note) : null,
      d.extra ?? null,
    ),
    h(
      "div",
      { class: "payment-side" },
      h("div", { class: "payment-amount" }, formatAmount(d.amount, d.currency)),
      h("span", { class: `badge ${d.status}` }, statusLabel[d.status]),
    ),
  );
}

/** The row data of a payment as the gateway reports it. */
export function rowOf(p: Payment, direction: RowData["direction"] = "out"): RowData {
  const status = statusOf(p);
  const time = createdAt(p);
  return {
    paymentId: p.paymentId,
    fromAccount: p.fromAccount,
    toAccount: p.toAccount,
    amount: p.amount,
    currency: p.currency,
    description: p.description,
    status,
    note: status === "failed" ? `Failed: ${failureText(p)}${p.failureMessage ? ` (${p.failureMessage})` : ""}` : undefined,
    time,
    timeText: formatTime(time),
    direction: p.refundOf !== "" ? "refund" : direction,
    refundOf: p.refundOf || undefined,
  };
}

/**
 * The refund lines of a payment: how much of it is refunded ("Refunded 10.00 of 25.00 USD",
 * "Refunded in full") and each refund with its status. Nothing when it has none.
 */
export function refundLines(p: Payment, refunds: Payment[]): Child[] {
  if (p.refundedAmount === 0n && refunds.length === 0) return [];
  const full = p.refundedAmount >= p.amount;
  return [
    p.refundedAmount > 0n
      ? h(
          "div",
          { class: "refunded small", "data-refunded": p.refundedAmount.toString() },
          full ? `Refunded in full (${formatAmount(p.refundedAmount, p.currency)})` : `Refunded ${formatAmount(p.refundedAmount, p.currency)} of ${formatAmount(p.amount, p.currency)}`,
        )
      : null,
    refunds.length > 0
      ? h(
          "ul",
          { class: "refunds small", "aria-label": "Refunds" },
          refunds.map((r) => {
            const status = statusOf(r);
            return h(
              "li",
              { class: `refund ${status}`, "data-refund-id": r.paymentId, "data-status": status, "data-amount": r.amount.toString() },
              h("span", { class: "refund-amount" }, `Refund ${formatAmount(r.amount, r.currency)}`),
              h("span", { class: `badge ${status}` }, statusLabel[status]),
              h("span", { class: "muted" }, [formatTime(createdAt(r)), r.description].filter(Boolean).join(" · ")),
              status === "failed" ? h("span", { class: "error-text" }, failureText(r)) : null,
            );
          }),
        )
      : null,
  ];
}
