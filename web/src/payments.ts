// Words and helpers for payments shared by the views.

import { timestampDate } from "@bufbuild/protobuf/wkt";

import { FailureReason, type Payment, PaymentStatus } from "./gen/paygate/gateway/v1/gateway_pb";

/** What the page shows for a payment: the API's statuses plus the browser's own "queued". */
export type Status = "queued" | "sending" | "processing" | "succeeded" | "failed";

export const statusLabel: Record<Status, string> = {
  queued: "Queued",
  sending: "Sending",
  processing: "Processing",
  succeeded: "Succeeded",
  failed: "Failed",
};

export function statusOf(p: Payment): Status {
  switch (p.status) {
    case PaymentStatus.SUCCEEDED:
      return "succeeded";
    case PaymentStatus.FAILED:
      return "failed";
    default:
      return "processing";
  }
}

const reasons: Record<FailureReason, string> = {
  [FailureReason.UNSPECIFIED]: "failed",
  [FailureReason.INSUFFICIENT_FUNDS]: "insufficient funds",
  [FailureReason.UNKNOWN_ACCOUNT]: "unknown account",
  [FailureReason.CURRENCY_MISMATCH]: "currency mismatch",
  [FailureReason.ACCOUNT_CLOSED]: "account closed",
  [FailureReason.TIMEOUT]: "timed out",
  [FailureReason.BANK_UNAVAILABLE]: "bank unavailable",
  [FailureReason.BALANCE_OVERFLOW]: "the payee's balance would overflow",
  [FailureReason.DECLINED]: "declined by the bank",
};

/** A short reason for a failed payment: "insufficient funds". */
export function failureText(p: Payment): string {
  return reasons[p.failureReason] ?? "failed";
}

export function createdAt(p: Payment): Date | undefined {
  return p.createTime ? timestampDate(p.createTime) : undefined;
}

/** A new payment_id: a random (version 4) UUID. */
export function newPaymentId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const x = Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
