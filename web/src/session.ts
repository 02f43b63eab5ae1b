// The signed-in session lives in sessionStorage: it survives a reload of the tab and is gone when
// the tab is closed. The token is bound by the gateway to "no client certificate", so it works
// only on the web listener.

export interface Session {
  token: string;
  username: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

const key = "paygate.session";

export function loadSession(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(key);
    if (!raw) return undefined;
    const s = JSON.parse(raw) as Partial<Session>;
    if (typeof s.token !== "string" || typeof s.username !== "string" || typeof s.expiresAt !== "number") {
      return undefined;
    }
    if (s.expiresAt <= Date.now()) {
      sessionStorage.removeItem(key);
      return undefined;
    }
    return s as Session;
  } catch {
    return undefined;
  }
}

export function saveSession(s: Session): void {
  sessionStorage.setItem(key, JSON.stringify(s));
}

export function clearSession(): void {
  sessionStorage.removeItem(key);
}
