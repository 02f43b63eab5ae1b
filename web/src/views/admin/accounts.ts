// Admin page: the accounts of one bank with their balances, holds and linked users; opening
// and closing accounts; deposits and withdrawals, the only ways money enters or leaves the
// system, each sent with a request id made once per intended entry so that a retry moves
// nothing more.

import { Code, ConnectError } from "@connectrpc/connect";

import { adminClient, isRetryable } from "../../api";
import { h, replace } from "../../dom";
import { type BankAccount, type LedgerEntry, LedgerEntryKind } from "../../gen/paygate/gateway/v1/admin_pb";
import { AmountError, formatAmount, parseAmount } from "../../money";
import { fillBanks } from "./banks";
import {
  type AdminPage, adminErrorText, amount, badge, busy, button, card, field, formatStamp, Intent, Latest, num, Pager, readOptions, resultArea,
  row, select, showResult, shortId, table, textInput, withRequestId,
} from "./common";

type MoneyKind = "deposit" | "withdraw";

/** What the page says when an action was not answered and may be sent again as it is. */
const retryHint = "Submit again to retry: it carries the same request id, so it is applied at most once.";

export class AccountsPage implements AdminPage {
  readonly el: HTMLElement;
  private readonly bank = h("select", { id: "accounts-bank", name: "bank" });
  private readonly list = h("div", { id: "accounts-list" });
  private readonly listStatus = h("p", { class: "muted small", id: "accounts-status", "aria-live": "polite" });
  private readonly pager = new Pager("accounts", () => void this.load());
  private readonly entries = h("div", { id: "entries-list" });
  private readonly entriesPager = new Pager("entries", () => void this.loadEntries(), ["← Newer", "Older →"]);
  private accounts: BankAccount[] = [];
  private readonly loads = new Latest();
  private readonly entryLoads = new Latest();

  private readonly openBank = h("select", { id: "open-bank", name: "open-bank" });
  private readonly openHolder = textInput("open-holder", { maxlength: 64, required: true });
  private readonly openCurrency = textInput("open-currency", { maxlength: 3, value: "USD", autocapitalize: "characters", class: "mono" });
  private readonly openLink = textInput("open-link", { maxlength: 64, placeholder: "Optional" });
  private readonly openSubmit = h("button", { type: "submit", id: "open-submit", class: "button primary" }, "Open account");
  private readonly openResult = resultArea("open-result");
  private readonly openIntent = new Intent();
  private readonly openForm: HTMLFormElement;

  private readonly moneyAccount = h("select", { id: "money-account", name: "money-account" });
  private readonly moneyKind = select("money-kind", [["deposit", "Deposit"], ["withdraw", "Withdraw"]]);
  private readonly moneyAmount = textInput("money-amount", { inputmode: "decimal", placeholder: "0.00", required: true });
  private readonly moneyCurrency = h("span", { class: "suffix", id: "money-currency", "aria-hidden": "true" }, "USD");
  private readonly moneyReason = textInput("money-reason", { maxlength: 200, placeholder: "e.g. cash deposit, branch 12", required: true });
  private readonly moneySubmit = h("button", { type: "submit", id: "money-submit", class: "button primary" }, "Deposit");
  private readonly moneyResult = resultArea("money-result");
  private readonly moneyIntent = new Intent();
  private readonly moneyForm: HTMLFormElement;

  private readonly closeReason = textInput("close-reason", { maxlength: 200, placeholder: "Why, for the audit log" });
  private readonly closeSubmit = button("Close account", { id: "close-submit", class: "button ghost small danger" });
  private readonly closeResult = resultArea("close-result");

  constructor() {
    this.bank.addEventListener("change", () => {
      this.pager.reset();
      this.entriesPager.reset();
      void this.load();
      void this.loadEntries();
    });
    const refresh = button("Refresh", { id: "accounts-refresh" });
    refresh.addEventListener("click", () => {
      void this.load();
      void this.loadEntries();
    });

    this.openForm = h(
      "form",
      { class: "stack", id: "open-form", novalidate: true, "data-request-id": this.openIntent.current },
      field("Bank", this.openBank),
      field("Holder", this.openHolder, "The name the bank records; to link the account to a user, their username."),
      field("Currency", this.openCurrency, "ISO 4217, e.g. USD."),
      field("Link to user", this.openLink, "Optional: link the new account to this user at once."),
      this.openSubmit,
      this.openResult,
    );
    this.openForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.open();
    });

    this.moneyAccount.addEventListener("change", () => this.showCurrency());
    this.moneyKind.addEventListener("change", () => {
      this.moneySubmit.textContent = this.moneyKind.value === "withdraw" ? "Withdraw" : "Deposit";
    });
    this.moneyForm = h(
      "form",
      { class: "stack", id: "money-form", novalidate: true, "data-request-id": this.moneyIntent.current },
      field("Account", this.moneyAccount),
      field("Action", this.moneyKind),
      h("div", { class: "field" }, h("label", { for: "money-amount" }, "Amount"), h("div", { class: "with-suffix" }, this.moneyAmount, this.moneyCurrency)),
      field("Reason", this.moneyReason, "Recorded in the bank's journal and the audit log."),
      this.moneySubmit,
      this.moneyResult,
    );
    this.moneyForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.move();
    });

    this.closeSubmit.addEventListener("click", () => void this.close());
    const closeForm = h(
      "div",
      { class: "stack", id: "close-form" },
      h("p", { class: "muted small" }, "Only an account with a zero balance, and nothing held or incoming, can be closed. A closed account refuses every payment."),
      h("div", { class: "field" }, h("label", { for: "close-reason" }, "Reason"), h("div", { class: "inline" }, this.closeReason, this.closeSubmit)),
      this.closeResult,
    );

    this.el = h(
      "div",
      { class: "admin-grid", id: "admin-accounts" },
      h(
        "div",
        { class: "col" },
        card("bank-accounts", "Accounts", [h("label", { class: "sr-only", for: "accounts-bank" }, "Bank"), this.bank, refresh], this.listStatus, this.list, this.pager.el),
        card("entries", "Deposits and withdrawals", [], this.entries, this.entriesPager.el),
      ),
      h(
        "div",
        { class: "col" },
        card("money", "Deposit or withdraw", [], this.moneyForm, h("hr", {}), h("h3", {}, "Close the account"), closeForm),
        card("open-account", "Open an account", [], this.openForm),
      ),
    );
  }

  show(): void {
    void (async () => {
      try {
        await fillBanks(this.bank);
        await fillBanks(this.openBank, this.openBank.value || this.bank.value);
      } catch (e) {
        showResult(this.list, "error", `The banks could not be listed: ${adminErrorText(e)}`);
        return;
      }
      await Promise.all([this.load(), this.loadEntries()]);
    })();
  }

  private async load(): Promise<void> {
    const bank = this.bank.value;
    if (bank === "") return;
    const latest = this.loads.start();
    this.listStatus.textContent = "Loading…";
    try {
      const resp = await adminClient.listBankAccounts({ bank, pageSize: 50, pageToken: this.pager.token }, readOptions);
      if (!latest()) return;
      this.pager.loaded(resp.nextPageToken);
      this.listStatus.textContent = "";
      this.accounts = resp.accounts;
      this.render();
    } catch (e) {
      if (!latest()) return;
      this.listStatus.textContent = "";
      showResult(this.list, "error", `The accounts of ${bank} could not be loaded: ${adminErrorText(e)}`);
    }
  }

  private render(): void {
    replace(
      this.list,
      table(
        "accounts-table",
        ["Account", "Holder", "Balance", "Held", "Available", "Incoming", "Linked user", ""],
        this.accounts.map((a) => {
          const b = a.balance;
          const pick = button("Select", { "data-select-account": a.accountId });
          pick.addEventListener("click", () => this.pick(a.accountId));
          return row(
            { "data-account": a.accountId, "data-closed": String(a.closed) },
            h("span", { class: "mono nowrap" }, a.accountId, a.closed ? " " : "", a.closed ? badge("Closed", "failed") : null),
            a.holder,
            num(b ? formatAmount(b.balance, a.currency) : "—"),
            num(b ? amount(b.held, a.currency) : "—"),
            num(b ? amount(b.available, a.currency) : "—"),
            num(b ? amount(b.pendingCredit, a.currency) : "—"),
            a.linkedUsername ? h("span", { class: "linked-user" }, a.linkedUsername) : h("span", { class: "muted" }, "—"),
            a.closed ? null : pick,
          );
        }),
        "No accounts at this bank.",
      ),
    );
    const keep = this.moneyAccount.value;
    replace(
      this.moneyAccount,
      this.accounts.filter((a) => !a.closed).map((a) =>
        h("option", { value: a.accountId, selected: a.accountId === keep }, `${a.accountId} · ${a.holder} · ${a.balance ? formatAmount(a.balance.available, a.currency) : a.currency}`)),
    );
    this.showCurrency();
  }

  /** Chooses an account for the deposit, withdrawal and close forms. */
  private pick(accountId: string): void {
    this.moneyAccount.value = accountId;
    this.showCurrency();
    for (const tr of this.list.querySelectorAll("tr[data-account]")) tr.classList.toggle("selected", tr.getAttribute("data-account") === accountId);
    this.moneyAmount.focus();
  }

  private selectedAccount(): BankAccount | undefined {
    return this.accounts.find((a) => a.accountId === this.moneyAccount.value);
  }

  private showCurrency(): void {
    this.moneyCurrency.textContent = this.selectedAccount()?.currency ?? "USD";
  }

  private async loadEntries(): Promise<void> {
    const bank = this.bank.value;
    if (bank === "") return;
    const latest = this.entryLoads.start();
    try {
      const resp = await adminClient.listLedgerEntries({ bank, pageSize: 20, pageToken: this.entriesPager.token }, readOptions);
      if (!latest()) return;
      this.entriesPager.loaded(resp.nextPageToken);
      replace(
        this.entries,
        table(
          "entries-table",
          ["Time", "Entry", "Account", "Amount", "Balance after", "Admin", "Reason"],
          resp.entries.map((e) => entryRow(e)),
          `No deposits or withdrawals at ${bank} yet.`,
        ),
      );
    } catch (e) {
      if (!latest()) return;
      showResult(this.entries, "error", `The journal of ${bank} could not be loaded: ${adminErrorText(e)}`);
    }
  }

  private async open(): Promise<void> {
    const bank = this.openBank.value;
    const holder = this.openHolder.value.trim();
    const currency = this.openCurrency.value.trim().toUpperCase();
    const linkUsername = this.openLink.value.trim();
    if (holder === "") {
      showResult(this.openResult, "error", "Enter the holder's name.");
      this.openHolder.focus();
      return;
    }
    if (!/^[A-Z]{3}$/.test(currency)) {
      showResult(this.openResult, "error", "A currency is a three-letter ISO 4217 code, e.g. USD.");
      this.openCurrency.focus();
      return;
    }
    const params = { bank, holder, currency, linkUsername };
    const requestId = this.openIntent.idFor(params);
    this.openForm.dataset["requestId"] = requestId;
    await busy(this.openSubmit, "Opening…", async () => {
      try {
        const r = await adminClient.openAccount({ ...params, requestId }, withRequestId(requestId));
        const a = r.account;
        this.openIntent.done();
        this.openForm.dataset["requestId"] = this.openIntent.current;
        const id = a?.accountId ?? "";
        showResult(
          this.openResult,
          "success",
          `${r.replayed ? "Already opened by this request: " : "Opened "}${id} at ${bank} for ${holder} (${currency})${a?.linkedUsername ? `, linked to ${a.linkedUsername}` : ""}.`,
        );
        this.openHolder.value = "";
        this.openLink.value = "";
        if (bank !== this.bank.value) {
          this.bank.value = bank;
          this.pager.reset();
          this.entriesPager.reset();
          void this.loadEntries();
        }
        await this.load();
        if (id) this.pick(id);
      } catch (e) {
        showResult(this.openResult, "error", adminErrorText(e) + (isRetryable(e) ? ` ${retryHint}` : ""));
      }
    });
  }

  private async move(): Promise<void> {
    const a = this.selectedAccount();
    const kind = this.moneyKind.value as MoneyKind;
    if (!a) {
      showResult(this.moneyResult, "error", "Choose an account.");
      this.moneyAccount.focus();
      return;
    }
    let minor: bigint;
    try {
      minor = parseAmount(this.moneyAmount.value, a.currency);
    } catch (e) {
      showResult(this.moneyResult, "error", e instanceof AmountError ? `Invalid amount. ${e.message}` : String(e));
      this.moneyAmount.focus();
      return;
    }
    const reason = this.moneyReason.value.trim();
    if (reason === "") {
      showResult(this.moneyResult, "error", "Give a reason; the bank's journal and the audit log record it.");
      this.moneyReason.focus();
      return;
    }
    const params = { kind, accountId: a.accountId, amount: minor, currency: a.currency, reason };
    const requestId = this.moneyIntent.idFor(params);
    this.moneyForm.dataset["requestId"] = requestId;
    this.moneyResult.dataset["requestId"] = requestId;
    await busy(this.moneySubmit, kind === "deposit" ? "Depositing…" : "Withdrawing…", async () => {
      try {
        const req = { accountId: a.accountId, amount: minor, currency: a.currency, reason, requestId };
        const r = kind === "deposit" ? await adminClient.deposit(req, withRequestId(requestId)) : await adminClient.withdraw(req, withRequestId(requestId));
        this.moneyIntent.done();
        this.moneyForm.dataset["requestId"] = this.moneyIntent.current;
        const what = formatAmount(minor, a.currency);
        const after = r.entry ? ` Balance after it: ${formatAmount(r.entry.balanceAfter, a.currency)}.` : "";
        const done = kind === "deposit" ? `Deposited ${what} into ${a.accountId}.` : `Withdrew ${what} from ${a.accountId}.`;
        showResult(this.moneyResult, "success", r.replayed ? `Already done by this request; nothing more moved. ${done}${after}` : `${done}${after}`);
        this.moneyAmount.value = "";
        this.moneyReason.value = "";
        await Promise.all([this.load(), this.loadEntries()]);
      } catch (e) {
        let text = adminErrorText(e);
        if (e instanceof ConnectError && e.code === Code.FailedPrecondition && /insufficient/.test(text)) {
          text = `Not withdrawn: more than ${a.accountId} has available. ${text}`;
        }
        showResult(this.moneyResult, "error", text + (isRetryable(e) ? ` ${retryHint}` : ""));
      }
    });
  }

  private async close(): Promise<void> {
    const a = this.selectedAccount();
    const reason = this.closeReason.value.trim();
    if (!a) {
      showResult(this.closeResult, "error", "Choose an account.");
      return;
    }
    if (reason === "") {
      showResult(this.closeResult, "error", "Give a reason for closing the account; the audit log records it.");
      this.closeReason.focus();
      return;
    }
    await busy(this.closeSubmit, "Closing…", async () => {
      try {
        await adminClient.closeAccount({ accountId: a.accountId, reason }, readOptions);
        showResult(this.closeResult, "success", `${a.accountId} is closed.`);
        this.closeReason.value = "";
        await this.load();
      } catch (e) {
        showResult(this.closeResult, "error", adminErrorText(e));
      }
    });
  }
}

function entryRow(e: LedgerEntry): HTMLTableRowElement {
  const deposit = e.kind === LedgerEntryKind.DEPOSIT;
  return row(
    { "data-entry-id": e.entryId, "data-kind": deposit ? "deposit" : "withdrawal" },
    h("span", { class: "small" }, formatStamp(e.createTime)),
    h("span", {}, badge(deposit ? "Deposit" : "Withdrawal", deposit ? "succeeded" : "queued"), " ", shortId(e.entryId)),
    h("span", { class: "mono nowrap" }, e.accountId),
    num(`${deposit ? "+" : "−"}${formatAmount(e.amount, e.currency)}`),
    num(formatAmount(e.balanceAfter, e.currency)),
    e.admin,
    e.reason,
  );
}
