// What the page knows of refunds and of the payments others make to the user's accounts. It
// learns them from ListPayments with received (the payments others made to the user's
// accounts, the refunds of the user's payments among them, a page at a time, newest first),
// from the user's events followed with WatchPayments, from the pages of the user's own
// payments (the refunds the user made are payments of theirs) and from RefundPayment's
// answers.
//
// A refund is a Payment with refund_of set: it moves money from the refunded payment's payee
// (to_account) back to its payer (from_account), and the refunded payment's refunded_amount
// grows when it succeeds.

import { type Payment, PaymentStatus } from "./gen/paygate/gateway/v1/gateway_pb";

/** Whether p is a refund of another payment. */
export function isRefund(p: Payment): boolean {
  return p.refundOf !== "";
}

/** What is left to refund of p: its amount less its refunded_amount (0 for anything but a succeeded payment). */
export function leftToRefund(p: Payment): bigint {
  if (isRefund(p) || p.status !== PaymentStatus.SUCCEEDED) return 0n;
  const left = p.amount - p.refundedAmount;
  return left > 0n ? left : 0n;
}

/**
 * Merges two snapshots of one payment: the later one, except that a decided status never goes
 * back to processing and refunded_amount never shrinks (a late or replayed answer may carry an
 * older snapshot than an event already seen).
 */
export function mergePayment(prev: Payment | undefined, next: Payment): Payment {
  if (!prev) return next;
  const decided = (p: Payment) => p.status === PaymentStatus.SUCCEEDED || p.status === PaymentStatus.FAILED;
  const base = decided(prev) && !decided(next) ? prev : next;
  const refunded = prev.refundedAmount > next.refundedAmount ? prev.refundedAmount : next.refundedAmount;
  return base.refundedAmount === refunded ? base : { ...base, refundedAmount: refunded };
}

/**
 * PaymentBook keeps the latest snapshot of every payment the page has heard of by event or
 * answer, the payments made to the user's accounts by others, and each payment's refunds.
 * Views subscribe to be told when it changes.
 */
export class PaymentBook {
  private readonly latest = new Map<string, Payment>();
  /** payment_ids of payments others made to the user's accounts. */
  private readonly receivedSet = new Set<string>();
  /** refund_ids by the payment_id they refund. */
  private readonly refundIds = new Map<string, Set<string>>();
  private readonly listeners = new Set<() => void>();
  private notifyQueued = false;

  /** Registers f to be called (once per burst of changes) when the book changes; returns its removal. */
  subscribe(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  /**
   * Records a snapshot of p. received says p was made to the user's accounts by someone else;
   * an event says so by an empty username (only the payer sees who paid).
   */
  put(p: Payment, received = false): void {
    const merged = mergePayment(this.latest.get(p.paymentId), p);
    this.latest.set(p.paymentId, merged);
    if (isRefund(p)) {
      let ids = this.refundIds.get(p.refundOf);
      if (!ids) this.refundIds.set(p.refundOf, (ids = new Set()));
      ids.add(p.paymentId);
    } else if (received) {
      this.receivedSet.add(p.paymentId);
    }
    this.changed();
  }

  /** The latest snapshot of a payment, or undefined. */
  get(paymentId: string): Payment | undefined {
    return this.latest.get(paymentId);
  }

  /** p merged with what the book knows of it (a refunded_amount grown since p was read). */
  freshest(p: Payment): Payment {
    const known = this.latest.get(p.paymentId);
    return known ? mergePayment(known, p) : p;
  }

  /**
   * The payments others made to the user's accounts, newest first (by create_time, then
   * payment_id: ListPayments' order, whatever order they were learnt in).
   */
  received(): Payment[] {
    return [...this.receivedSet].map((id) => this.latest.get(id)!).sort(newestFirst);
  }

  /** The refunds of a payment, oldest first. */
  refundsOf(paymentId: string): Payment[] {
    const ids = this.refundIds.get(paymentId);
    if (!ids) return [];
    return [...ids].map((id) => this.latest.get(id)!);
  }

  private changed(): void {
    if (this.notifyQueued) return;
    this.notifyQueued = true;
    queueMicrotask(() => {
      this.notifyQueued = false;
      for (const f of this.listeners) f();
    });
  }
}

/** Orders payments newest first: by create_time, then payment_id, both descending. */
export function newestFirst(a: Payment, b: Payment): number {
  const as = a.createTime?.seconds ?? 0n;
  const bs = b.createTime?.seconds ?? 0n;
  if (as !== bs) return as > bs ? -1 : 1;
  const an = a.createTime?.nanos ?? 0;
  const bn = b.createTime?.nanos ?? 0;
  if (an !== bn) return bn - an;
  return a.paymentId < b.paymentId ? 1 : a.paymentId > b.paymentId ? -1 : 0;
}
