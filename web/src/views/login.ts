// The sign-in page.

import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { authClient, errorInfo, isUnreachable } from "../api";
import { h, replace } from "../dom";
import type { Session } from "../session";

/** Why a sign-in failed, in words for the user. */
export function loginErrorText(err: unknown, withCode = false): string {
  if (isUnreachable(err)) return "Cannot reach the gateway. Check your connection and try again.";
  if (!(err instanceof ConnectError)) return "Sign-in failed. Try again.";
  const info = errorInfo(err);
  switch (err.code) {
    case Code.Unauthenticated:
      return withCode ? "Wrong username, password or authenticator code." : "Wrong username or password.";
    case Code.ResourceExhausted: {
      const secs = Number(info.metadata["retry_after_seconds"]);
      const wait = Number.isFinite(secs) && secs > 0 ? `in ${Math.ceil(secs)} second${Math.ceil(secs) === 1 ? "" : "s"}` : "later";
      return `Too many failed sign-in attempts. Try again ${wait}.`;
    }
    case Code.PermissionDenied:
      if (info.reason === "user_disabled") return "This user is disabled. Ask an administrator.";
      return `Sign-in failed: ${err.rawMessage}`;
    case Code.InvalidArgument:
      return /totp_code/.test(err.rawMessage) ? "The authenticator code is 6 digits." : "Enter your username and password.";
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return "The gateway is not answering. Try again in a moment.";
    default:
      return `Sign-in failed: ${err.rawMessage}`;
  }
}

export interface LoginOptions {
  /** Fills in the username, e.g. of a user who has just registered. */
  username?: string;
  /** Shows the registration page. */
  onRegister?: () => void;
  /**
   * Called instead of onSignedIn when the password is an initial one, set by an admin: the
   * session can do nothing but change it. currentPassword is what was just typed.
   */
  onPasswordChange?: (s: Session, currentPassword: string) => void;
}

/** Renders the sign-in page into root; onSignedIn gets the new session. */
export function renderLogin(root: HTMLElement, notice: string | undefined, onSignedIn: (s: Session) => void, opts: LoginOptions = {}): void {
  const username = h("input", { id: "login-username", name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  if (opts.username) username.value = opts.username;
  const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const totp = h("input", {
    id: "login-totp", name: "totp", autocomplete: "one-time-code", inputmode: "numeric", maxlength: 6,
    pattern: "[0-9]{6}", spellcheck: "false", "aria-describedby": "login-totp-hint", class: "mono",
  });
  const error = h("p", { id: "login-error", class: "form-error", role: "alert" });
  const submit = h("button", { id: "login-submit", type: "submit", class: "button primary wide" }, "Sign in");

  const form = h(
    "form",
    { class: "stack", novalidate: true, "aria-describedby": "login-error" },
    h("div", { class: "field" }, h("label", { for: "login-username" }, "Username"), username),
    h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), password),
    h("div", { class: "field" }, h("label", { for: "login-totp" }, "Authenticator code"), totp,
      h("p", { id: "login-totp-hint", class: "hint" }, "Administrators only: the 6 digits your authenticator app shows. Leave empty otherwise.")),
    error,
    submit,
  );

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    error.textContent = "";
    if (username.value.trim() === "" || password.value === "") {
      error.textContent = "Enter your username and password.";
      (username.value.trim() === "" ? username : password).focus();
      return;
    }
    const code = totp.value.replace(/\s/g, "");
    if (code !== "" && !/^[0-9]{6}$/.test(code)) {
      error.textContent = "The authenticator code is 6 digits.";
      totp.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      const resp = await authClient.login({ username: username.value.trim(), password: password.value, totpCode: code }, { timeoutMs: 15000 });
      const expiresAt = resp.expireTime ? timestampDate(resp.expireTime).getTime() : Date.now() + 3600_000;
      const s: Session = { token: resp.token, username: resp.username, expiresAt, role: resp.role, secondFactor: resp.secondFactor };
      if (resp.passwordChangeRequired && opts.onPasswordChange) {
        opts.onPasswordChange(s, password.value);
      } else {
        onSignedIn(s);
      }
    } catch (e) {
      error.textContent = loginErrorText(e, code !== "");
      password.value = "";
      totp.value = "";
      password.focus();
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });

  replace(
    root,
    h(
      "main",
      { class: "login" },
      h(
        "section",
        { class: "card login-card", "aria-labelledby": "login-title" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "paygate"),
        h("h1", { id: "login-title" }, "Sign in"),
        h("p", { class: "muted" }, "Payments across your banks, exactly once."),
        notice ? h("p", { id: "login-notice", class: "notice", role: "status" }, notice) : null,
        form,
        opts.onRegister
          ? h("p", { class: "muted small register-link" }, "New here? ",
              h("button", { id: "show-register", type: "button", class: "link", onclick: opts.onRegister }, "Create an account"),
              " with the enrollment codes your bank sent you.")
          : null,
      ),
    ),
  );
  (opts.username ? password : username).focus();
}
