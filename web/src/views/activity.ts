// Live status: the payments of this session as they change (the refunds the user makes too),
// from the WatchPayments stream and from the outbox (payments queued in this browser while the
// gateway cannot be reached).

import { formatTime, h, replace } from "../dom";
import type { Payment } from "../gen/paygate/gateway/v1/gateway_pb";
import type { QueuedPayment } from "../outbox";
import { createdAt, failureText, type Status, statusOf } from "../payments";
import { paymentRow, type RowData } from "./rows";

const maxRows = 8;

export type LiveState = "connecting" | "live" | "reconnecting";

const liveText: Record<LiveState, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
};

interface Entry extends RowData {
  /** Whether a WatchPayments event has updated the entry. */
  watched: boolean;
  order: number;
}

export class ActivityView {
  readonly el: HTMLElement;
  private readonly list = h("ul", { class: "payments", id: "activity-list" });
  private readonly empty = h("p", { class: "muted small", id: "activity-empty" }, "Payments you make appear here and update as they are decided.");
  private readonly indicator = h("span", { class: "live connecting", id: "live-indicator", role: "status" }, liveText.connecting);
  private readonly entries = new Map<string, Entry>();
  private order = 0;

  constructor() {
    this.el = h(
      "section",
      { class: "card", id: "activity", "aria-labelledby": "activity-title" },
      h("header", { class: "card-head" }, h("h2", { id: "activity-title" }, "Live status"), this.indicator),
      this.empty,
      this.list,
    );
  }

  setLive(state: LiveState): void {
    this.indicator.className = `live ${state}`;
    this.indicator.textContent = liveText[state];
  }

  /** A payment waiting in the outbox; why says what happened to its last attempt. */
  queued(q: QueuedPayment, status: "queued" | "sending", why?: string): void {
    const prev = this.entries.get(q.paymentId);
    if (prev && (prev.status === "succeeded" || prev.status === "failed")) return;
    this.put({
      paymentId: q.paymentId,
      fromAccount: q.fromAccount,
      toAccount: q.toAccount,
      amount: BigInt(q.amount),
      currency: q.currency,
      description: q.description,
      status,
      note: status === "queued" ? (why ?? "Waiting for the gateway; it will be sent automatically.") : undefined,
      time: new Date(q.queuedAt),
      timeText: formatTime(new Date(q.queuedAt)),
      watched: prev?.watched ?? false,
      order: prev?.order ?? ++this.order,
    });
  }

  /** A payment as the gateway reports it, from ExecutePayment or from the stream (watched). */
  payment(p: Payment, watched: boolean): void {
    const prev = this.entries.get(p.paymentId);
    const status: Status = statusOf(p);
    // A late "processing" event never hides an outcome already shown.
    if (prev && (prev.status === "succeeded" || prev.status === "failed") && status === "processing") {
      if (watched && !prev.watched) this.put({ ...prev, watched: true });
      return;
    }
    const time = createdAt(p);
    this.put({
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
      direction: p.refundOf !== "" ? "refund" : "out",
      refundOf: p.refundOf || undefined,
      watched: watched || (prev?.watched ?? false),
      order: prev?.order ?? ++this.order,
    });
  }

  /** A queued payment the gateway refused outright (nothing was recorded). */
  refused(q: QueuedPayment, why: string): void {
    const prev = this.entries.get(q.paymentId);
    this.queued(q, "queued");
    const e = this.entries.get(q.paymentId);
    if (e) this.put({ ...e, status: "failed", note: why, order: prev?.order ?? e.order });
  }

  /** Drops a row: a request the gateway refused outright, which the pay form reports itself. */
  remove(paymentId: string): void {
    if (this.entries.delete(paymentId)) this.render();
  }

  private put(e: Entry): void {
    this.entries.set(e.paymentId, e);
    this.render();
  }

  private render(): void {
    const rows = [...this.entries.values()].sort((a, b) => b.order - a.order);
    for (const old of rows.slice(maxRows)) this.entries.delete(old.paymentId);
    this.empty.hidden = rows.length > 0;
    replace(
      this.list,
      rows.slice(0, maxRows).map((r) => paymentRow(r, { "data-watched": String(r.watched) })),
    );
  }
}
