// The pay form. Each intended payment gets one payment_id, made when the form is opened or reset;
// submitting again (a double click, a retry after an error) sends the same payment_id, so the
// gateway executes it at most once. Changing what is paid makes a new payment_id.

import { Code, ConnectError } from "@connectrpc/connect";

import { errorInfo, rawMessage } from "../api";
import { h, replace } from "../dom";
import { type Payment, PaymentStatus } from "../gen/paygate/gateway/v1/gateway_pb";
import { AmountError, formatAmount, parseAmount } from "../money";
import { failureText, newPaymentId } from "../payments";
import type { OwnAccount } from "./balances";

export interface PayRequest {
  paymentId: string;
  fromAccount: string;
  toAccount: string;
  amount: bigint;
  currency: string;
  description: string;
}

/** What became of a submitted payment. */
export type PayResult =
  | { kind: "outcome"; payment: Payment }
  | { kind: "queued"; paymentId: string; why: string }
  | { kind: "error"; err: unknown };

type Field = "from" | "to" | "amount" | "description";

/** Words for an error ExecutePayment answered with, and the field it is about. */
export function payErrorText(err: unknown): { text: string; field?: Field } {
  if (!(err instanceof ConnectError)) return { text: rawMessage(err) };
  const info = errorInfo(err);
  switch (info.reason) {
    case "unknown_bank":
    case "unknown_account":
      return { text: `Unknown account: ${err.rawMessage}`, field: "to" };
    case "not_account_owner":
      return { text: "You can only pay from your own accounts.", field: "from" };
    case "payment_id_reused":
      return { text: "This payment was already made with other details. Check the history, then submit again to make a new payment." };
  }
  if (err.code === Code.InvalidArgument) {
    const fields = (info.metadata["fields"] ?? "").split(",");
    const msg = err.rawMessage.replace(/^validation error:\s*/, "");
    if (fields.includes("amount") || /amount/.test(msg)) return { text: `Invalid amount: ${msg}`, field: "amount" };
    if (/to_account/.test(msg)) return { text: `Invalid recipient: ${msg}`, field: "to" };
    if (/description/.test(msg)) return { text: `Invalid description: ${msg}`, field: "description" };
    return { text: `Invalid payment: ${msg}` };
  }
  if (err.code === Code.NotFound) return { text: `Unknown account: ${err.rawMessage}`, field: "to" };
  if (err.code === Code.Unauthenticated) return { text: "Your session has ended; sign in again. The payment is kept and will be sent." };
  return { text: `The payment was not made: ${err.rawMessage}` };
}

export class PayForm {
  readonly el: HTMLElement;
  private accounts: OwnAccount[] = [];
  private paymentId = newPaymentId();
  /** The parameters last sent with paymentId; other parameters need a new payment_id. */
  private sentKey: string | undefined;
  private busy = false;
  /** The payment the result area last said was queued. */
  private queuedId: string | undefined;

  private readonly from = h("select", { id: "pay-from", name: "from", required: true });
  private readonly to = h("input", { id: "pay-to", name: "to", required: true, autocomplete: "off", autocapitalize: "none", spellcheck: "false", placeholder: "bank2-2002" });
  private readonly amount = h("input", { id: "pay-amount", name: "amount", required: true, inputmode: "decimal", autocomplete: "off", placeholder: "0.00" });
  private readonly currency = h("span", { class: "suffix", id: "pay-currency", "aria-hidden": "true" }, "USD");
  private readonly description = h("input", { id: "pay-description", name: "description", maxlength: 200, autocomplete: "off", placeholder: "Optional" });
  private readonly submit = h("button", { id: "pay-submit", type: "submit", class: "button primary wide" }, "Pay");
  private readonly result = h("div", { id: "pay-result", role: "status", "aria-live": "polite" });
  private readonly errors: Record<Field, HTMLElement> = {
    from: h("p", { id: "pay-from-error", class: "field-error" }),
    to: h("p", { id: "pay-to-error", class: "field-error" }),
    amount: h("p", { id: "pay-amount-error", class: "field-error" }),
    description: h("p", { id: "pay-description-error", class: "field-error" }),
  };
  private readonly form: HTMLFormElement;

  constructor(private readonly send: (req: PayRequest) => Promise<PayResult>) {
    this.from.addEventListener("change", () => this.showCurrency());
    this.form = h(
      "form",
      { id: "pay-form", class: "stack", novalidate: true, "data-payment-id": this.paymentId },
      this.field("from", "From", this.from),
      this.field("to", "To account", this.to, "An account id such as bank2-2002."),
      this.field("amount", "Amount", h("div", { class: "with-suffix" }, this.amount, this.currency)),
      this.field("description", "Description", this.description),
      this.submit,
      this.result,
    );
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.onSubmit();
    });
    this.el = h("section", { class: "card", id: "pay", "aria-labelledby": "pay-title" }, h("header", { class: "card-head" }, h("h2", { id: "pay-title" }, "Pay")), this.form);
  }

  private field(name: Field, label: string, control: HTMLElement, hint?: string): HTMLElement {
    const id = `pay-${name}`;
    const input = control instanceof HTMLInputElement || control instanceof HTMLSelectElement ? control : control.querySelector("input");
    const described = [hint ? `${id}-hint` : "", `${id}-error`].filter(Boolean).join(" ");
    input?.setAttribute("aria-describedby", described);
    return h(
      "div",
      { class: "field" },
      h("label", { for: id }, label),
      control,
      hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null,
      this.errors[name],
    );
  }

  /** Offers the user's accounts as payers, keeping the current choice. */
  setAccounts(accounts: OwnAccount[]): void {
    this.accounts = accounts;
    const keep = this.from.value;
    replace(
      this.from,
      accounts.map((a) =>
        h(
          "option",
          { value: a.accountId, selected: a.accountId === keep },
          a.available === undefined ? `${a.accountId} (bank unavailable)` : `${a.accountId} · ${formatAmount(a.available, a.currency)}`,
        ),
      ),
    );
    this.showCurrency();
  }

  private showCurrency(): void {
    const a = this.accounts.find((x) => x.accountId === this.from.value);
    this.currency.textContent = a?.currency ?? "USD";
  }

  private setError(name: Field, text: string): void {
    this.errors[name].textContent = text;
    const input = name === "from" ? this.from : name === "to" ? this.to : name === "amount" ? this.amount : this.description;
    input.setAttribute("aria-invalid", "true");
  }

  private clearErrors(): void {
    for (const name of Object.keys(this.errors) as Field[]) this.errors[name].textContent = "";
    for (const el of [this.from, this.to, this.amount, this.description]) el.removeAttribute("aria-invalid");
  }

  private showResult(kind: "success" | "error" | "info", text: string): void {
    replace(this.result, h("p", { class: `result ${kind}`, "data-kind": kind }, text));
  }

  /** Starts a new intended payment: new payment_id, empty amount, recipient and description. */
  private reset(): void {
    this.paymentId = newPaymentId();
    this.sentKey = undefined;
    this.form.dataset["paymentId"] = this.paymentId;
    this.to.value = "";
    this.amount.value = "";
    this.description.value = "";
  }

  /** Tells the user how a payment they saw queued ended, when it ends. */
  settled(p: Payment): void {
    if (p.paymentId !== this.queuedId || p.status === PaymentStatus.PROCESSING) return;
    this.queuedId = undefined;
    const what = `${formatAmount(p.amount, p.currency)} to ${p.toAccount}`;
    if (p.status === PaymentStatus.SUCCEEDED) {
      this.showResult("success", `The queued payment of ${what} was sent and succeeded.`);
    } else {
      this.showResult("error", `The queued payment of ${what} failed: ${failureText(p)}. No money moved.`);
    }
  }

  private async onSubmit(): Promise<void> {
    if (this.busy) return; // a double click while the first is on its way
    this.clearErrors();
    replace(this.result);
    this.queuedId = undefined;
    const acct = this.accounts.find((a) => a.accountId === this.from.value);
    const toAccount = this.to.value.trim();
    let bad: Field | undefined;
    if (!acct) {
      this.setError("from", "Choose an account to pay from.");
      bad ??= "from";
    }
    if (toAccount === "") {
      this.setError("to", "Enter the account to pay.");
      bad ??= "to";
    } else if (acct && toAccount === acct.accountId) {
      this.setError("to", "Choose an account other than the one you pay from.");
      bad ??= "to";
    }
    const currency = acct?.currency ?? "USD";
    let amount = 0n;
    try {
      amount = parseAmount(this.amount.value, currency);
    } catch (e) {
      this.setError("amount", e instanceof AmountError ? `Invalid amount. ${e.message}` : String(e));
      bad ??= "amount";
    }
    if (bad || !acct) {
      this.focus(bad ?? "from");
      return;
    }
    const description = this.description.value.trim();
    const key = JSON.stringify([acct.accountId, toAccount, amount.toString(), currency, description]);
    if (this.sentKey !== undefined && this.sentKey !== key) {
      this.paymentId = newPaymentId(); // a different payment, not a retry of the last one
      this.form.dataset["paymentId"] = this.paymentId;
    }
    this.sentKey = key;

    this.busy = true;
    this.submit.disabled = true;
    this.submit.textContent = "Paying…";
    this.form.setAttribute("aria-busy", "true");
    let r: PayResult;
    try {
      r = await this.send({ paymentId: this.paymentId, fromAccount: acct.accountId, toAccount, amount, currency, description });
    } finally {
      this.busy = false;
      this.submit.disabled = false;
      this.submit.textContent = "Pay";
      this.form.removeAttribute("aria-busy");
    }
    const what = `${formatAmount(amount, currency)} to ${toAccount}`;
    switch (r.kind) {
      case "outcome":
        if (r.payment.status === PaymentStatus.FAILED) {
          const detail = r.payment.failureMessage ? ` (${r.payment.failureMessage})` : "";
          this.showResult("error", `Payment failed: ${failureText(r.payment)}${detail}. No money moved.`);
          if (/insufficient/.test(failureText(r.payment))) this.setError("amount", "More than the account has available.");
          if (/unknown account/.test(failureText(r.payment))) this.setError("to", "No such account.");
          // The outcome is final: paying again is a new payment.
          this.paymentId = newPaymentId();
          this.sentKey = undefined;
          this.form.dataset["paymentId"] = this.paymentId;
        } else if (r.payment.status === PaymentStatus.SUCCEEDED) {
          this.showResult("success", `Paid ${what}.`);
          this.reset();
        } else {
          this.showResult("info", `Payment of ${what} is processing; its status is under Live status.`);
          this.reset();
        }
        break;
      case "queued":
        this.queuedId = r.paymentId;
        this.showResult("info", `${r.why} The payment of ${what} is queued and will be sent, once, when the gateway answers.`);
        this.reset();
        break;
      case "error": {
        const { text, field } = payErrorText(r.err);
        this.showResult("error", text);
        if (field) {
          this.setError(field, text);
          this.focus(field);
        }
        break;
      }
    }
  }

  private focus(name: Field): void {
    ({ from: this.from, to: this.to, amount: this.amount, description: this.description })[name].focus();
  }
}
