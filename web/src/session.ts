// The signed-in session lives in sessionStorage: it survives a reload of the tab and is gone when
// the tab is closed. The token is bound by the gateway to "no client certificate", so it works
// only on the web listener.

export interface Session {
  token: string;
  username: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  /** "customer" or "admin", as Login answered. */
  role: string;
  /** The login passed the second factor (an admin who gave the authenticator code). */
  secondFactor: boolean;
}

/**
 * Whether the session may use the admin pages: an admin whose login passed the second factor.
 * The gateway decides for itself on every call; this only chooses what the page shows.
 */
export function isAdmin(s: Session): boolean {
  return s.role === "admin" && s.secondFactor;
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
    return { token: s.token, username: s.username, expiresAt: s.expiresAt, role: s.role === "admin" ? "admin" : "customer", secondFactor: s.secondFactor === true };
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
