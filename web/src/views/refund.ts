// The refund dialog: how much of a received payment to give back (all that is left, unless the
// user changes it) and why. Each opening of the dialog is one intended refund with one
// refund_id; submitting again from the same dialog (after the gateway could not be reached, a
// timeout, a refusal) sends the same refund_id, so the gateway refunds at most once. Only after
// a refund that failed (an outcome: nothing moved) does the next submission get a new one.

import { Code, ConnectError } from "@connectrpc/connect";

import { errorInfo, isRetryable, isUnreachable, paymentClient, rawMessage } from "../api";
import { h, replace } from "../dom";
import { type Payment, PaymentStatus } from "../gen/paygate/gateway/v1/gateway_pb";
import { AmountError, formatAmount, formatDecimal, parseAmount } from "../money";
import { failureText, newPaymentId } from "../payments";
import { leftToRefund } from "../refunds";

/** What RefundPayment answered: the refund and the refunded payment as it is after it. */
export interface RefundOutcome {
  refund: Payment;
  payment: Payment | undefined;
  replayed: boolean;
}

type Field = "amount" | "reason";

/**
 * Words for an error RefundPayment answered with for a refund of p, the field it is about (and
 * shorter words for it there), and, for a refund larger than what is left, how much is left, in
 * minor units.
 */
export function refundErrorText(err: unknown, p?: Payment): { text: string; field?: Field; fieldText?: string; left?: bigint } {
  if (!(err instanceof ConnectError)) return { text: rawMessage(err) };
  if (isUnreachable(err)) {
    return { text: "Cannot reach the gateway, so the refund's outcome is unknown. Submit again to retry: it is the same refund and is made at most once." };
  }
  const info = errorInfo(err);
  switch (info.reason) {
    case "refund_exceeds_payment": {
      const left = /^\d+$/.test(info.metadata["left"] ?? "") ? BigInt(info.metadata["left"]!) : undefined;
      if (left === undefined || !p) return { text: `That is more than is left to refund of this payment. Nothing was refunded. (${err.rawMessage})`, field: "amount" };
      const text = left === 0n
        ? "Nothing is left to refund of this payment: it is refunded, or being refunded, in full. Nothing was refunded."
        : `That is more than is left to refund of this payment: ${formatAmount(left, p.currency)} of ${formatAmount(p.amount, p.currency)}. Nothing was refunded.`;
      const fieldText = left === 0n ? "Nothing is left to refund." : `At most ${formatAmount(left, p.currency)} is left to refund.`;
      return { text, field: "amount", fieldText, left };
    }
    case "refund_id_reused":
      return { text: "This refund was already sent with other details. Close the dialog and check the payment's refunds before refunding again." };
    case "not_payee":
      return { text: "Only the owner of the account that was paid can refund this payment." };
    case "payment_not_succeeded":
      return { text: "Only a succeeded payment can be refunded." };
    case "refund_of_refund":
      return { text: "A refund cannot be refunded." };
    case "unknown_bank":
      return { text: `This payment cannot be refunded: the gateway no longer works with the bank of one of its accounts (${err.rawMessage}).` };
  }
  switch (err.code) {
    case Code.InvalidArgument: {
      const fields = (info.metadata["fields"] ?? "").split(",");
      const msg = err.rawMessage.replace(/^validation error:\s*/, "");
      if (fields.includes("reason") || /reason/.test(msg)) return { text: `Invalid reason: ${msg}`, field: "reason" };
      if (fields.includes("amount") || /amount/.test(msg)) return { text: `Invalid amount: ${msg}`, field: "amount" };
      return { text: `Invalid refund: ${msg}` };
    }
    case Code.FailedPrecondition:
      return { text: `This payment cannot be refunded: ${err.rawMessage}.` };
    case Code.NotFound:
      return { text: `The payment was not found: ${err.rawMessage}.` };
    case Code.PermissionDenied:
      return { text: `You may not refund this payment: ${err.rawMessage}.` };
    case Code.Unimplemented:
      return { text: "This gateway does not make refunds." };
    case Code.Unauthenticated:
      return { text: "Your session has ended; sign in again." };
  }
  if (isRetryable(err)) {
    return { text: `The refund's outcome is not known yet (${err.rawMessage}). Submit again to retry: it is the same refund and is made at most once.` };
  }
  return { text: `The refund was not made: ${err.rawMessage}` };
}

export class RefundDialog {
  readonly el: HTMLDialogElement;
  private payment: Payment | undefined;
  private refundId = "";
  private busy = false;

  private readonly heading = h("h2", { id: "refund-title" }, "Refund");
  private readonly summary = h("p", { class: "muted small", id: "refund-summary" });
  private readonly amount = h("input", { id: "refund-amount", name: "amount", required: true, inputmode: "decimal", autocomplete: "off", "aria-describedby": "refund-amount-hint refund-amount-error" });
  private readonly currency = h("span", { class: "suffix", id: "refund-currency", "aria-hidden": "true" }, "USD");
  private readonly amountHint = h("p", { id: "refund-amount-hint", class: "hint" });
  private readonly reason = h("input", { id: "refund-reason", name: "reason", maxlength: 200, autocomplete: "off", placeholder: "Optional", "aria-describedby": "refund-reason-error" });
  private readonly errors: Record<Field, HTMLElement> = {
    amount: h("p", { id: "refund-amount-error", class: "field-error" }),
    reason: h("p", { id: "refund-reason-error", class: "field-error" }),
  };
  private readonly submit = h("button", { id: "refund-submit", type: "submit", class: "button primary" }, "Refund");
  private readonly cancel = h("button", { id: "refund-cancel", type: "button", class: "button ghost" }, "Cancel");
  private readonly result = h("div", { id: "refund-result", role: "status", "aria-live": "polite" });
  private readonly form: HTMLFormElement;

  /** done is called with every outcome the gateway answers (succeeded, failed or processing). */
  constructor(private readonly done: (o: RefundOutcome) => void) {
    this.form = h(
      "form",
      { id: "refund-form", class: "stack", novalidate: true },
      h("header", { class: "card-head" }, this.heading),
      this.summary,
      h("div", { class: "field" }, h("label", { for: "refund-amount" }, "Amount to refund"), h("div", { class: "with-suffix" }, this.amount, this.currency), this.amountHint, this.errors.amount),
      h("div", { class: "field" }, h("label", { for: "refund-reason" }, "Reason"), this.reason, this.errors.reason),
      this.result,
      h("div", { class: "dialog-actions" }, this.cancel, this.submit),
    );
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.onSubmit();
    });
    this.cancel.addEventListener("click", () => this.close());
    this.el = h("dialog", { id: "refund-dialog", class: "dialog card", "aria-labelledby": "refund-title" }, this.form);
    // Escape closes the dialog, except while a request is on its way.
    this.el.addEventListener("cancel", (ev) => {
      if (this.busy) ev.preventDefault();
    });
  }

  /** Opens the dialog for a new refund of p, with all that is left as the amount. */
  open(p: Payment): void {
    this.payment = p;
    this.newRefundId();
    const left = leftToRefund(p);
    this.heading.textContent = `Refund the payment from ${p.fromAccount}`;
    this.summary.textContent = `${formatAmount(p.amount, p.currency)} to ${p.toAccount}${p.description ? ` · ${p.description}` : ""}. The refund goes back to ${p.fromAccount}.`;
    this.currency.textContent = p.currency;
    this.amount.value = formatDecimal(left, p.currency).replace(/,/g, "");
    this.amountHint.textContent = `Left to refund: ${formatAmount(left, p.currency)}.`;
    this.reason.value = "";
    this.clearErrors();
    replace(this.result);
    this.setBusy(false);
    if (!this.el.open) this.el.showModal();
    this.amount.select();
  }

  /** The payment_id of the payment the open dialog refunds, or undefined. */
  get shown(): string | undefined {
    return this.el.open ? this.payment?.paymentId : undefined;
  }

  /** Updates what the dialog knows of its payment (a refund made meanwhile, elsewhere). */
  update(p: Payment): void {
    if (!this.el.open || this.payment?.paymentId !== p.paymentId) return;
    this.payment = p;
    this.amountHint.textContent = `Left to refund: ${formatAmount(leftToRefund(p), p.currency)}.`;
  }

  close(): void {
    if (this.busy) return;
    this.payment = undefined;
    if (this.el.open) this.el.close();
  }

  private newRefundId(): void {
    this.refundId = newPaymentId();
    this.form.dataset["refundId"] = this.refundId;
  }

  private setBusy(busy: boolean): void {
    this.busy = busy;
    this.submit.disabled = busy;
    this.cancel.disabled = busy;
    this.submit.textContent = busy ? "Refunding…" : "Refund";
    if (busy) this.form.setAttribute("aria-busy", "true");
    else this.form.removeAttribute("aria-busy");
  }

  private setError(name: Field, text: string): void {
    this.errors[name].textContent = text;
    (name === "amount" ? this.amount : this.reason).setAttribute("aria-invalid", "true");
  }

  private clearErrors(): void {
    for (const name of ["amount", "reason"] as Field[]) {
      this.errors[name].textContent = "";
      (name === "amount" ? this.amount : this.reason).removeAttribute("aria-invalid");
    }
  }

  private showResult(kind: "success" | "error" | "info", text: string): void {
    replace(this.result, h("p", { class: `result ${kind}`, "data-kind": kind }, text));
  }

  private async onSubmit(): Promise<void> {
    const p = this.payment;
    if (this.busy || !p) return;
    this.clearErrors();
    replace(this.result);
    let amount: bigint;
    try {
      amount = parseAmount(this.amount.value, p.currency);
    } catch (e) {
      this.setError("amount", e instanceof AmountError ? `Invalid amount. ${e.message}` : String(e));
      this.amount.focus();
      return;
    }
    const reason = this.reason.value.trim();
    this.setBusy(true);
    let outcome: RefundOutcome | undefined;
    let failure: unknown;
    try {
      const resp = await paymentClient.refundPayment({ refundId: this.refundId, paymentId: p.paymentId, amount, reason }, { timeoutMs: 40000 });
      if (resp.refund) outcome = { refund: resp.refund, payment: resp.payment, replayed: resp.replayed };
      else failure = new Error("the gateway answered without the refund");
    } catch (e) {
      failure = e;
    } finally {
      this.setBusy(false);
    }
    if (!outcome) {
      const { text, field, fieldText, left } = refundErrorText(failure, p);
      if (left !== undefined) this.amountHint.textContent = `Left to refund: ${formatAmount(left, p.currency)}.`;
      this.showResult("error", text);
      if (field) {
        this.setError(field, fieldText ?? text);
        (field === "amount" ? this.amount : this.reason).focus();
      }
      return;
    }
    this.done(outcome);
    const r = outcome.refund;
    const what = `${formatAmount(r.amount, r.currency)} to ${r.toAccount}`;
    switch (r.status) {
      case PaymentStatus.SUCCEEDED:
        this.close();
        break;
      case PaymentStatus.FAILED: {
        const detail = r.failureMessage ? ` (${r.failureMessage})` : "";
        this.showResult("error", `The refund of ${what} failed: ${failureText(r)}${detail}. No money moved.`);
        // The outcome is final: refunding again is a new refund.
        this.newRefundId();
        break;
      }
      default:
        this.close();
    }
  }
}
