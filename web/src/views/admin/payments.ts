// Admin page: every user's payments, searched with filters, and one payment's two-phase trail:
// what the gateway recorded (admission, prepares, votes, the decision and who made it,
// acknowledgements, retries), oldest first, and each bank's own record of it, read now.

import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";

import { adminClient } from "../../api";
import { h, replace } from "../../dom";
import { DecidedBy, type GetPaymentTrailResponse, type TrailEvent, TrailEventKind } from "../../gen/paygate/gateway/v1/admin_pb";
import { FailureReason, type Payment, PaymentStatus } from "../../gen/paygate/gateway/v1/gateway_pb";
import { formatAmount } from "../../money";
import { failureText, statusLabel, statusOf } from "../../payments";
import {
  type AdminPage, adminErrorText, badge, busy, button, card, field, formatStamp, Latest, num, Pager, readOptions, resultArea, row, select,
  showResult, table, textInput,
} from "./common";

export const eventLabel: Record<TrailEventKind, string> = {
  [TrailEventKind.UNSPECIFIED]: "Event",
  [TrailEventKind.ADMITTED]: "Admitted",
  [TrailEventKind.PREPARE_SENT]: "Prepare sent",
  [TrailEventKind.VOTE]: "Vote",
  [TrailEventKind.BANK_ERROR]: "Bank error",
  [TrailEventKind.DECIDED]: "Decided",
  [TrailEventKind.ACKNOWLEDGED]: "Acknowledged",
  [TrailEventKind.RETRY]: "Sent again",
  [TrailEventKind.CLAIMED]: "Claimed by a replica",
  [TrailEventKind.REDRIVE_REQUESTED]: "Re-drive requested",
  [TrailEventKind.COMPLETED]: "Completed",
};

export const decidedByLabel: Record<DecidedBy, string> = {
  [DecidedBy.UNSPECIFIED]: "",
  [DecidedBy.REQUEST]: "the payment's request",
  [DecidedBy.TIMEOUT_MONITOR]: "the timeout monitor",
  [DecidedBy.GET_DECISION]: "a bank's GetDecision (presumed abort)",
  [DecidedBy.RECOVERY]: "recovery",
};

const eventClass: Partial<Record<TrailEventKind, string>> = {
  [TrailEventKind.BANK_ERROR]: "bad",
  [TrailEventKind.DECIDED]: "decided",
  [TrailEventKind.COMPLETED]: "good",
};

/** A payment's status as a badge, with the failure reason. */
export function paymentStatus(p: Payment): HTMLElement {
  const s = statusOf(p);
  return h("span", { class: "badges" }, badge(statusLabel[s], s), s === "failed" ? h("span", { class: "small error-text" }, failureText(p)) : null);
}

/** A link to a payment's trail. */
export function trailLink(id: string): HTMLAnchorElement {
  return h("a", { href: `#admin/payments/${encodeURIComponent(id)}`, class: "mono trail-link", title: id, "data-trail": id }, id.length > 13 ? `${id.slice(0, 13)}…` : id);
}

/** The time of a trail event to the millisecond: the steps of one payment are close together. */
function eventTime(e: TrailEvent): string {
  if (!e.time) return "";
  return timestampDate(e.time).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hourCycle: "h23" });
}

const bankStateClass: Record<string, string> = {
  committed: "succeeded",
  aborted: "failed",
  prepared: "processing",
  unknown: "",
  unavailable: "queued",
};

export class PaymentsPage implements AdminPage {
  readonly el: HTMLElement;
  private readonly username = textInput("search-username", { maxlength: 64 });
  private readonly account = textInput("search-account", { maxlength: 64, placeholder: "bank1-1001" });
  private readonly bank = textInput("search-bank", { maxlength: 63, placeholder: "bank1" });
  private readonly status = select("search-status", [
    [String(PaymentStatus.UNSPECIFIED), "Any"],
    [String(PaymentStatus.PROCESSING), "Processing"],
    [String(PaymentStatus.SUCCEEDED), "Succeeded"],
    [String(PaymentStatus.FAILED), "Failed"],
  ]);
  private readonly reason = select("search-reason", [
    [String(FailureReason.UNSPECIFIED), "Any"],
    [String(FailureReason.INSUFFICIENT_FUNDS), "Insufficient funds"],
    [String(FailureReason.UNKNOWN_ACCOUNT), "Unknown account"],
    [String(FailureReason.CURRENCY_MISMATCH), "Currency mismatch"],
    [String(FailureReason.ACCOUNT_CLOSED), "Account closed"],
    [String(FailureReason.TIMEOUT), "Timed out"],
    [String(FailureReason.BANK_UNAVAILABLE), "Bank unavailable"],
    [String(FailureReason.BALANCE_OVERFLOW), "Balance overflow"],
    [String(FailureReason.DECLINED), "Declined"],
  ]);
  private readonly after = h("input", { id: "search-after", name: "search-after", type: "datetime-local", step: 1 });
  private readonly before = h("input", { id: "search-before", name: "search-before", type: "datetime-local", step: 1 });
  private readonly list = h("div", { id: "payments-list" });
  private readonly listStatus = h("p", { class: "muted small", id: "payments-status", "aria-live": "polite" });
  private readonly pager = new Pager("payments", () => void this.search(), ["← Newer", "Older →"]);
  private readonly searchCard: HTMLElement;
  private readonly searches = new Latest();

  private readonly trail = h("div", { id: "trail" });
  private readonly trailCard: HTMLElement;
  private trailId = "";

  constructor() {
    const submit = h("button", { type: "submit", id: "search-submit", class: "button primary small" }, "Search");
    const clear = button("Clear", { id: "search-clear" });
    const form = h(
      "form",
      { class: "filters", id: "search-form", role: "search" },
      field("User", this.username),
      field("Account", this.account),
      field("Bank", this.bank),
      field("Status", this.status),
      field("Failure reason", this.reason),
      field("Created from", this.after),
      field("Created before", this.before),
      h("div", { class: "filters-actions" }, submit, clear),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.pager.reset();
      void this.search();
    });
    clear.addEventListener("click", () => {
      form.reset();
      this.pager.reset();
      void this.search();
    });

    const byId = textInput("trail-id", { placeholder: "A payment id", maxlength: 64 });
    const go = h("button", { type: "submit", id: "trail-open", class: "button ghost small" }, "Open trail");
    const byIdForm = h("form", { class: "inline", id: "trail-form" }, h("label", { class: "sr-only", for: "trail-id" }, "Payment id"), byId, go);
    byIdForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = byId.value.trim();
      if (id !== "") location.hash = `#admin/payments/${encodeURIComponent(id)}`;
    });

    this.searchCard = card("payments", "Payments", [byIdForm], form, this.listStatus, this.list, this.pager.el);
    this.trailCard = card("payment-trail", "Payment trail", [h("a", { href: "#admin/payments", class: "button ghost small", id: "trail-back" }, "← Back to the search")], this.trail);
    this.el = h("div", { class: "admin-wide", id: "admin-payments" }, this.trailCard, this.searchCard);
  }

  show(arg: string): void {
    const id = decodeURIComponent(arg);
    this.trailCard.hidden = id === "";
    this.searchCard.hidden = id !== "";
    if (id !== "") {
      this.trailId = id;
      void this.loadTrail(id);
    } else if (this.list.childElementCount === 0) {
      void this.search();
    }
  }

  private async search(): Promise<void> {
    const latest = this.searches.start();
    this.listStatus.textContent = "Searching…";
    const after = this.after.value ? new Date(this.after.value) : undefined;
    const before = this.before.value ? new Date(this.before.value) : undefined;
    try {
      const resp = await adminClient.searchPayments(
        {
          username: this.username.value.trim(),
          accountId: this.account.value.trim(),
          bank: this.bank.value.trim(),
          status: Number(this.status.value) as PaymentStatus,
          failureReason: Number(this.reason.value) as FailureReason,
          createdAfter: after && !Number.isNaN(after.getTime()) ? timestampFromDate(after) : undefined,
          createdBefore: before && !Number.isNaN(before.getTime()) ? timestampFromDate(before) : undefined,
          pageSize: 25,
          pageToken: this.pager.token,
        },
        readOptions,
      );
      if (!latest()) return;
      this.pager.loaded(resp.nextPageToken);
      this.listStatus.textContent = "";
      replace(
        this.list,
        table(
          "payments-table",
          ["Created", "Payment", "User", "From", "To", "Amount", "Status"],
          resp.payments.map((p) =>
            row(
              { "data-payment-id": p.paymentId, "data-status": statusOf(p) },
              h("span", { class: "small" }, formatStamp(p.createTime)),
              trailLink(p.paymentId),
              p.username,
              h("span", { class: "mono nowrap" }, p.fromAccount),
              h("span", { class: "mono nowrap" }, p.toAccount),
              num(formatAmount(p.amount, p.currency)),
              paymentStatus(p),
            ),
          ),
          "No payments match.",
        ),
      );
    } catch (e) {
      if (!latest()) return;
      this.listStatus.textContent = "";
      showResult(this.list, "error", `The search failed: ${adminErrorText(e)}`);
    }
  }

  private async loadTrail(id: string): Promise<void> {
    replace(this.trail, h("p", { class: "muted" }, "Loading the trail…"));
    try {
      const resp = await adminClient.getPaymentTrail({ paymentId: id }, readOptions);
      if (id !== this.trailId) return;
      this.renderTrail(resp);
    } catch (e) {
      if (id !== this.trailId) return;
      showResult(this.trail, "error", `The trail of ${id} could not be loaded: ${adminErrorText(e)}`);
    }
  }

  private renderTrail(t: GetPaymentTrailResponse): void {
    const p = t.payment;
    if (!p) return;
    const result = resultArea("trail-result");
    const refresh = button("Refresh", { id: "trail-refresh" });
    refresh.addEventListener("click", () => void this.loadTrail(p.paymentId));
    const redrive = button("Re-drive now", { id: "trail-redrive" }, "primary");
    redrive.hidden = t.completed;
    redrive.addEventListener("click", () =>
      void busy(redrive, "Re-driving…", async () => {
        try {
          const r = await adminClient.redrivePayment({ paymentId: p.paymentId }, readOptions);
          await this.loadTrail(p.paymentId);
          showResult(this.trail.querySelector<HTMLElement>("#trail-result") ?? result, "success", r.completed ? "Re-driven: the payment is finished." : "Re-driven: recovery ran; the payment is not finished yet.");
        } catch (e) {
          showResult(result, "error", adminErrorText(e));
        }
      }));

    const events = t.events.map((e) => {
      const parts: string[] = [];
      if (e.vote) parts.push(`voted ${e.vote.toUpperCase()}`);
      if (e.decision) parts.push(e.decision.toUpperCase());
      if (e.decidedBy !== DecidedBy.UNSPECIFIED) parts.push(`by ${decidedByLabel[e.decidedBy]}`);
      if (e.attempt > 0) parts.push(`attempt ${e.attempt}`);
      return h(
        "li",
        { class: `event ${eventClass[e.kind] ?? ""}`, "data-kind": TrailEventKind[e.kind] ?? "UNSPECIFIED", "data-bank": e.bank },
        h("span", { class: "event-time mono small" }, eventTime(e)),
        h(
          "div",
          { class: "event-body" },
          h("div", { class: "event-title" }, h("span", { class: "event-kind" }, eventLabel[e.kind] ?? "Event"), e.bank ? h("span", { class: "event-bank" }, e.bank) : null,
            parts.length > 0 ? h("span", { class: "event-what" }, parts.join(" · ")) : null),
          e.detail ? h("div", { class: "event-detail small" }, e.detail) : null,
          e.replica ? h("div", { class: "muted small" }, `replica ${e.replica}`) : null,
        ),
      );
    });

    replace(
      this.trail,
      h(
        "div",
        { class: "trail-head" },
        h("div", {}, h("div", { class: "trail-amount" }, formatAmount(p.amount, p.currency)), h("div", { class: "mono small muted", id: "trail-payment-id" }, p.paymentId)),
        h("div", { class: "card-tools" }, paymentStatus(p), t.completed ? badge("Completed", "succeeded") : badge("Not finished", "queued"), refresh, redrive),
      ),
      h(
        "dl",
        { class: "kv", id: "trail-summary" },
        h("dt", {}, "User"), h("dd", {}, p.username),
        h("dt", {}, "From"), h("dd", { class: "mono" }, p.fromAccount),
        h("dt", {}, "To"), h("dd", { class: "mono" }, p.toAccount),
        p.description ? [h("dt", {}, "Description"), h("dd", {}, p.description)] : null,
        h("dt", {}, "Created"), h("dd", {}, formatStamp(p.createTime)),
        h("dt", {}, "Decided"), h("dd", {}, p.decideTime ? formatStamp(p.decideTime) : "not yet"),
        p.failureMessage ? [h("dt", {}, "Why it failed"), h("dd", { class: "error-text" }, p.failureMessage)] : null,
      ),
      result,
      h("h3", {}, "Trail"),
      events.length > 0 ? h("ol", { class: "timeline", id: "trail-events" }, events) : h("p", { class: "muted", id: "trail-events" }, "No events recorded."),
      h("h3", {}, "At the banks now"),
      table(
        "trail-banks",
        ["Bank", "State", "Detail"],
        t.banks.map((b) => row({ "data-bank": b.bank, "data-state": b.state }, b.bank, badge(b.state, bankStateClass[b.state] ?? ""), h("span", { class: "small" }, b.detail))),
        "No bank reported.",
      ),
    );
  }
}
