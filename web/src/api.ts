// The gateway's API over the Connect protocol, from the same origin that served the page (the
// gateway's web listener). One transport; an interceptor adds the bearer token and reports an
// expired or revoked session.

import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";

import { AdminService } from "./gen/paygate/gateway/v1/admin_pb";
import { AuthService, BalanceService, PaymentService } from "./gen/paygate/gateway/v1/gateway_pb";

let token: string | undefined;
let onSessionLost: (reason: string) => void = () => {};

/** Sets the token sent on every call; undefined sends none. */
export function setToken(t: string | undefined): void {
  token = t;
}

/** Registers what happens when the gateway says the token is no good (expired, revoked, unknown). */
export function onUnauthenticated(f: (reason: string) => void): void {
  onSessionLost = f;
}

const auth: Interceptor = (next) => async (req) => {
  if (token !== undefined) {
    req.header.set("Authorization", `Bearer ${token}`);
  }
  try {
    return await next(req);
  } catch (e) {
    const err = ConnectError.from(e);
    if (err.code === Code.Unauthenticated && req.method.name !== "Login" && token !== undefined) {
      onSessionLost(errorInfo(err).reason ?? "invalid_token");
    }
    throw err;
  }
};

/**
 * Reports an Unauthenticated error that reached the caller without passing the interceptor (a
 * stream's error comes while its messages are read, after the interceptor has returned).
 */
export function reportUnauthenticated(e: unknown): void {
  const err = ConnectError.from(e);
  if (err.code === Code.Unauthenticated && token !== undefined) {
    onSessionLost(errorInfo(err).reason ?? "invalid_token");
  }
}

// fetch rejects with a TypeError when the gateway cannot be reached at all; report that as
// Unavailable, marked so that the page can tell "unreachable" from an answer.
const unreachable = new WeakSet<ConnectError>();
const guardedFetch: typeof fetch = async (input, init) => {
  try {
    return await fetch(input, init);
  } catch (e) {
    if (e instanceof TypeError) {
      const err = new ConnectError("cannot reach the gateway", Code.Unavailable, undefined, undefined, e);
      unreachable.add(err);
      throw err;
    }
    throw e;
  }
};

const transport = createConnectTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  fetch: guardedFetch,
  interceptors: [auth],
});

export const authClient = createClient(AuthService, transport);
export const paymentClient = createClient(PaymentService, transport);
export const balanceClient = createClient(BalanceService, transport);
export const adminClient = createClient(AdminService, transport);

/** The header that carries a call's request id; the audit log records it with the action. */
export const requestIdHeader = "Paygate-Request-Id";

/** Whether err means the gateway did not answer at all. */
export function isUnreachable(err: unknown): boolean {
  return err instanceof ConnectError && unreachable.has(err);
}

/**
 * Whether a failed ExecutePayment may be sent again, with the same payment_id, later: the
 * gateway was unreachable, the call timed out, a bank was down (nothing was recorded), or the
 * payment is still being decided. A retry returns the stored outcome and never pays twice.
 */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof ConnectError)) return false;
  switch (err.code) {
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Aborted:
      return true;
    case Code.Unknown:
    case Code.Internal:
      // A proxy or a connection cut mid-answer; the outcome is unknown, so ask again.
      return err.cause instanceof TypeError;
    default:
      return false;
  }
}

export interface ErrorInfo {
  reason?: string;
  metadata: Record<string, string>;
}

/** The google.rpc.ErrorInfo detail of err (reason and metadata), decoded by hand. */
export function errorInfo(err: unknown): ErrorInfo {
  const out: ErrorInfo = { metadata: {} };
  if (!(err instanceof ConnectError)) return out;
  for (const d of err.details) {
    if (!("type" in d) || d.type !== "google.rpc.ErrorInfo") continue;
    try {
      const r = new BinaryReader(d.value);
      while (r.pos < r.len) {
        const [field, wireType] = r.tag();
        if (field === 1 && wireType === 2) {
          out.reason = r.string();
        } else if (field === 3 && wireType === 2) {
          const entry = new BinaryReader(r.bytes());
          let k = "";
          let v = "";
          while (entry.pos < entry.len) {
            const [f, w] = entry.tag();
            if (f === 1 && w === 2) k = entry.string();
            else if (f === 2 && w === 2) v = entry.string();
            else entry.skip(w);
          }
          out.metadata[k] = v;
        } else {
          r.skip(wireType);
        }
      }
    } catch {
      // A malformed detail is ignored; the code and message still say what happened.
    }
  }
  return out;
}

/** The error's message without the "[code] " prefix connect-web adds. */
export function rawMessage(err: unknown): string {
  if (err instanceof ConnectError) return err.rawMessage;
  return err instanceof Error ? err.message : String(err);
}
