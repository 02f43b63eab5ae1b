// paygate's web dashboard: sign in, balances, pay, history and live payment status, and for an
// admin whose sign-in passed the second factor the admin pages, over the gateway's own Connect
// API from the origin that served this page.

import "./style.css";

import { onUnauthenticated, setToken } from "./api";
import { clearSession, loadSession, saveSession, type Session } from "./session";
import { Dashboard } from "./views/dashboard";
import { renderLogin } from "./views/login";
import { renderChangePassword } from "./views/password";
import { renderRegister } from "./views/register";

const root = document.getElementById("app") as HTMLElement;
let dashboard: Dashboard | undefined;
let expiryTimer: number | undefined;

function showLogin(notice?: string, username?: string): void {
  dashboard?.destroy();
  dashboard = undefined;
  window.clearTimeout(expiryTimer);
  clearSession();
  setToken(undefined);
  if (location.hash !== "") history.replaceState(null, "", location.pathname + location.search);
  document.title = "Sign in · paygate";
  renderLogin(
    root,
    notice,
    (s) => {
      saveSession(s);
      showDashboard(s);
    },
    { username, onRegister: showRegister, onPasswordChange: showChangePassword },
  );
}

// A session with an initial password can only change it; it is kept in memory, never stored.
function showChangePassword(s: Session, currentPassword: string): void {
  document.title = "Choose a new password · paygate";
  renderChangePassword(
    root,
    s,
    currentPassword,
    () => showLogin("Your password is changed. Sign in with the new one.", s.username),
    () => showLogin("You have signed out.", s.username),
  );
}

function showRegister(): void {
  document.title = "Create an account · paygate";
  renderRegister(
    root,
    (username) => showLogin(`Your account ${username} is ready. Sign in.`, username),
    () => showLogin(),
  );
}

function showDashboard(s: Session): void {
  setToken(s.token);
  document.title = `${s.username} · paygate`;
  dashboard = new Dashboard(root, s, () => showLogin("You have signed out."));
  // setTimeout holds at most 2^31-1 ms; a longer session is checked again then.
  const wait = Math.min(s.expiresAt - Date.now(), 2 ** 31 - 1);
  expiryTimer = window.setTimeout(() => {
    if (Date.now() >= s.expiresAt) showLogin("Your session has expired. Sign in again.");
  }, Math.max(wait, 0));
}

onUnauthenticated((reason) => {
  if (!dashboard) return;
  showLogin(
    reason === "user_disabled"
      ? "Your user has been disabled by an administrator."
      : reason === "token_revoked"
        ? "You were signed out. Sign in again."
        : "Your session has expired. Sign in again.",
  );
});

const session = loadSession();
if (session) {
  showDashboard(session);
} else {
  showLogin();
}
