// Balances per bank and the totals. A bank that does not answer is shown as unavailable, never
// as zero.

import { balanceClient, isUnreachable, rawMessage } from "../api";
import { h, replace } from "../dom";
import { type AccountBalance, BankStatus, type FetchBalanceResponse } from "../gen/paygate/gateway/v1/gateway_pb";
import { formatAmount } from "../money";

/** An account the user can pay from. */
export interface OwnAccount {
  accountId: string;
  bank: string;
  currency: string;
  /** Undefined when the bank is unavailable. */
  available?: bigint;
}

export class BalancesView {
  readonly el: HTMLElement;
  private readonly body = h("div", { id: "balances-body", "aria-live": "polite" });
  private readonly refreshButton = h("button", { type: "button", class: "button ghost small", id: "balances-refresh" }, "Refresh");
  private loading = false;
  private again = false;

  constructor(
    private readonly onAccounts: (accounts: OwnAccount[]) => void,
    private readonly onReachable: (ok: boolean) => void,
  ) {
    this.refreshButton.addEventListener("click", () => void this.refresh());
    this.body.append(h("p", { class: "muted" }, "Loading balances…"));
    this.el = h(
      "section",
      { class: "card", id: "balances", "aria-labelledby": "balances-title" },
      h("header", { class: "card-head" }, h("h2", { id: "balances-title" }, "Balances"), this.refreshButton),
      this.body,
    );
  }

  /** Fetches the balances again; calls made while one is running are folded into one more. */
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
          const resp = await balanceClient.fetchBalance({}, { timeoutMs: 15000 });
          this.onReachable(true);
          this.render(resp);
        } catch (e) {
          if (isUnreachable(e)) this.onReachable(false);
          this.renderError(e);
        }
      } while (this.again);
    } finally {
      this.loading = false;
      this.el.removeAttribute("aria-busy");
    }
  }

  private renderError(e: unknown): void {
    const msg = isUnreachable(e) ? "Cannot reach the gateway; showing nothing rather than stale figures." : `Balances could not be loaded: ${rawMessage(e)}`;
    const old = this.body.querySelector(".balances-error");
    if (old) old.remove();
    this.body.prepend(h("p", { class: "form-error balances-error", role: "alert" }, msg));
    this.body.querySelectorAll(".amount-figure").forEach((n) => n.classList.add("stale"));
  }

  private render(resp: FetchBalanceResponse): void {
    const accounts: OwnAccount[] = [];
    // A total is per currency; the accounts of a bank that did not answer have none.
    const totals = resp.totals.filter((t) => t.currency !== "").map((t) =>
      h(
        "div",
        { class: "total", "data-currency": t.currency },
        h("div", { class: "total-label" }, t.partial ? "Total available (incomplete)" : "Total available"),
        h("div", { class: "total-figure amount-figure", id: `total-${t.currency}` }, formatAmount(t.available, t.currency)),
        t.balance !== t.available ? h("div", { class: "muted small" }, `Balance ${formatAmount(t.balance, t.currency)}`) : null,
        t.partial ? h("div", { class: "warn small" }, "A bank did not answer: its accounts are not counted.") : null,
      ),
    );
    const banks = resp.banks.map((b) => {
      const down = b.status === BankStatus.UNAVAILABLE;
      for (const a of b.accounts) {
        accounts.push({ accountId: a.accountId, bank: b.bank, currency: a.currency, available: down ? undefined : a.available });
      }
      return h(
        "li",
        { class: "bank" + (down ? " down" : ""), "data-bank": b.bank, "data-status": down ? "unavailable" : "available" },
        h(
          "div",
          { class: "bank-head" },
          h("span", { class: "bank-name" }, b.bank),
          down ? h("span", { class: "badge failed" }, "Unavailable") : null,
        ),
        h("ul", { class: "accounts" }, b.accounts.map((a) => this.account(a, down))),
        down ? h("p", { class: "muted small" }, "This bank is not answering; its balance is unknown, not zero.") : null,
      );
    });
    const anyDown = resp.banks.some((b) => b.status === BankStatus.UNAVAILABLE);
    replace(
      this.body,
      totals.length > 0
        ? h("div", { class: "totals" }, totals)
        : anyDown
          ? h("div", { class: "totals" }, h("div", { class: "total" }, h("div", { class: "total-label" }, "Total available"), h("div", { class: "total-figure unavailable" }, "Unavailable")))
          : null,
      banks.length > 0 ? h("ul", { class: "banks" }, banks) : h("p", { class: "muted" }, "No accounts."),
    );
    this.onAccounts(accounts);
  }

  private account(a: AccountBalance, down: boolean): HTMLElement {
    return h(
      "li",
      { class: "account", "data-account": a.accountId },
      h("span", { class: "account-id" }, a.accountId),
      down
        ? h("span", { class: "account-figure unavailable" }, "Unavailable")
        : h(
            "span",
            { class: "account-figure" },
            h("span", { class: "balance amount-figure" }, formatAmount(a.available, a.currency)),
            a.held > 0n ? h("span", { class: "muted small" }, `${formatAmount(a.held, a.currency)} on hold`) : null,
            a.pendingCredit > 0n ? h("span", { class: "muted small" }, `${formatAmount(a.pendingCredit, a.currency)} incoming`) : null,
          ),
    );
  }
}
