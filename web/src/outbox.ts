// The outbox keeps every payment the user has asked for until the gateway has answered it with
// an outcome. It lives in localStorage, keyed by payment_id, so a payment survives the gateway
// being unreachable, a reload and a closed tab, and is sent again with the same payment_id
// (which the gateway executes at most once).

export interface QueuedPayment {
  paymentId: string;
  username: string;
  fromAccount: string;
  toAccount: string;
  /** Minor units, as decimal digits (bigint does not survive JSON). */
  amount: string;
  currency: string;
  description: string;
  /** Milliseconds since the epoch. */
  queuedAt: number;
  attempts: number;
  lastError?: string;
}

const key = "paygate.outbox";

function load(): Record<string, QueuedPayment> {
  try {
    const raw = localStorage.getItem(key);
    const all = raw ? (JSON.parse(raw) as Record<string, QueuedPayment>) : {};
    return typeof all === "object" && all !== null ? all : {};
  } catch {
    return {};
  }
}

function store(all: Record<string, QueuedPayment>): void {
  if (Object.keys(all).length === 0) {
    localStorage.removeItem(key);
  } else {
    localStorage.setItem(key, JSON.stringify(all));
  }
}

/** Adds p, or replaces the entry with the same payment_id. */
export function putQueued(p: QueuedPayment): void {
  const all = load();
  all[p.paymentId] = p;
  store(all);
}

export function getQueued(paymentId: string): QueuedPayment | undefined {
  return load()[paymentId];
}

export function removeQueued(paymentId: string): void {
  const all = load();
  if (paymentId in all) {
    delete all[paymentId];
    store(all);
  }
}

/** The payments of username still waiting for an outcome, oldest first. */
export function listQueued(username: string): QueuedPayment[] {
  return Object.values(load())
    .filter((p) => p.username === username)
    .sort((a, b) => a.queuedAt - b.queuedAt);
}
