// Admin page: in-doubt work and the banks. Payments undecided, or decided and not yet
// acknowledged by every bank, with what they wait for and a "Re-drive now" button (recovery now
// instead of at its next round; it never changes a decision); and per bank its health, holds,
// pending credits, deposits and withdrawals.

import { adminClient } from "../../api";
import { h, replace } from "../../dom";
import { type BankOperations, type GetOperationsResponse, type InDoubtPayment } from "../../gen/paygate/gateway/v1/admin_pb";
import { BankStatus } from "../../gen/paygate/gateway/v1/gateway_pb";
import { formatAmount, formatDecimal } from "../../money";
import { type AdminPage, adminErrorText, badge, busy, button, card, formatStamp, Latest, num, readOptions, row, showResult, table } from "./common";
import { paymentStatus, trailLink } from "./payments";

const stageLabel: Record<string, string> = {
  undecided: "Undecided",
  awaiting_acknowledgement: "Awaiting acknowledgement",
};

export class OperationsPage implements AdminPage {
  readonly el: HTMLElement;
  private readonly inDoubt = h("div", { id: "in-doubt" });
  private readonly banks = h("div", { id: "bank-ops" });
  private readonly status = h("p", { class: "muted small", id: "operations-status", "aria-live": "polite" });
  private readonly result = h("div", { id: "redrive-result", role: "status", "aria-live": "polite" });
  private readonly loads = new Latest();

  constructor() {
    const refresh = button("Refresh", { id: "operations-refresh" });
    refresh.addEventListener("click", () => void this.load());
    this.el = h(
      "div",
      { class: "admin-wide", id: "admin-operations" },
      card("in-doubt-card", "In-doubt payments", [refresh], this.status, this.result, this.inDoubt),
      card("banks-card", "Banks", [], this.banks,
        h("p", { class: "hint" }, "Sums over every account of the bank, all currencies together, with two decimals.")),
    );
  }

  show(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    const latest = this.loads.start();
    this.status.textContent = "Loading…";
    try {
      const resp = await adminClient.getOperations({ pageSize: 200 }, readOptions);
      if (!latest()) return;
      this.status.textContent = resp.more ? "More payments are in doubt than shown here: the oldest are shown." : "";
      this.render(resp);
    } catch (e) {
      if (!latest()) return;
      this.status.textContent = "";
      showResult(this.inDoubt, "error", `Operations could not be loaded: ${adminErrorText(e)}`);
    }
  }

  private render(resp: GetOperationsResponse): void {
    replace(
      this.inDoubt,
      table(
        "in-doubt-table",
        ["Payment", "Created", "From → to", "Amount", "Status", "Stage", "Waiting for", "Attempts", ""],
        resp.inDoubt.map((d) => this.inDoubtRow(d)),
        "Nothing is in doubt: every payment is decided and acknowledged by its banks.",
      ),
    );
    replace(
      this.banks,
      table(
        "banks-table",
        ["Bank", "Health", "Accounts", "Balance", "Held", "Incoming", "Prepared", "Deposited", "Withdrawn"],
        resp.banks.map((b) => bankRow(b)),
        "No banks.",
      ),
    );
  }

  private inDoubtRow(d: InDoubtPayment): HTMLTableRowElement {
    const p = d.payment;
    const id = p?.paymentId ?? "";
    const redrive = button("Re-drive now", { "data-redrive": id }, "primary");
    redrive.addEventListener("click", () =>
      void busy(redrive, "Re-driving…", async () => {
        try {
          const r = await adminClient.redrivePayment({ paymentId: id }, readOptions);
          showResult(this.result, "success", `${id}: ${r.completed ? "finished" : "recovery ran; not finished yet"}.`);
        } catch (e) {
          showResult(this.result, "error", `${id}: ${adminErrorText(e)}`);
        }
        await this.load();
      }));
    return row(
      { "data-payment-id": id, "data-stage": d.stage },
      trailLink(id),
      h("span", { class: "small" }, formatStamp(p?.createTime)),
      h("span", { class: "mono small" }, `${p?.fromAccount ?? ""} → ${p?.toAccount ?? ""}`),
      num(p ? formatAmount(p.amount, p.currency) : ""),
      p ? paymentStatus(p) : null,
      stageLabel[d.stage] ?? d.stage,
      h("span", { class: "small" }, d.waitingFor.join(", ") || "—"),
      num(String(d.attempts)),
      redrive,
    );
  }
}

function bankRow(b: BankOperations): HTMLTableRowElement {
  const down = b.status === BankStatus.UNAVAILABLE;
  const sum = (v: bigint) => num(down ? "—" : formatDecimal(v, ""));
  return row(
    { "data-bank": b.bank, "data-status": down ? "unavailable" : "available" },
    h("span", { class: "bank-name" }, b.bank),
    h("span", { class: "badges" }, down ? badge("Unavailable", "failed") : badge("Available", "succeeded"), b.error ? h("span", { class: "small error-text" }, b.error) : null),
    num(down ? "—" : String(b.accounts)),
    sum(b.balance),
    sum(b.held),
    sum(b.pendingCredit),
    num(down ? "—" : String(b.preparedTransactions)),
    sum(b.deposited),
    sum(b.withdrawn),
  );
}
