// The sign-in page.

import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { authClient, errorInfo, isUnreachable } from "../api";
import { h, replace } from "../dom";
import type { Session } from "../session";

/** Why a sign-in failed, in words for the user. */
export function loginErrorText(err: unknown): string {
  if (isUnreachable(err)) return "Cannot reach the gateway. Check your connection and try again.";
  if (!(err instanceof ConnectError)) return "Sign-in failed. Try again.";
  const info = errorInfo(err);
  switch (err.code) {
    case Code.Unauthenticated:
      return "Wrong username or password.";
    case Code.ResourceExhausted: {
      const secs = Number(info.metadata["retry_after_seconds"]);
      const wait = Number.isFinite(secs) && secs > 0 ? `in ${Math.ceil(secs)} second${Math.ceil(secs) === 1 ? "" : "s"}` : "later";
      return `Too many failed sign-in attempts. Try again ${wait}.`;
    }
    case Code.InvalidArgument:
      return "Enter your username and password.";
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
}

/** Renders the sign-in page into root; onSignedIn gets the new session. */
export function renderLogin(root: HTMLElement, notice: string | undefined, onSignedIn: (s: Session) => void, opts: LoginOptions = {}): void {
  const username = h("input", { id: "login-username", name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  if (opts.username) username.value = opts.username;
  const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { id: "login-error", class: "form-error", role: "alert" });
  const submit = h("button", { id: "login-submit", type: "submit", class: "button primary wide" }, "Sign in");

  const form = h(
    "form",
    { class: "stack", novalidate: true, "aria-describedby": "login-error" },
    h("div", { class: "field" }, h("label", { for: "login-username" }, "Username"), username),
    h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), password),
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
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      const resp = await authClient.login({ username: username.value.trim(), password: password.value }, { timeoutMs: 15000 });
      const expiresAt = resp.expireTime ? timestampDate(resp.expireTime).getTime() : Date.now() + 3600_000;
      onSignedIn({ token: resp.token, username: resp.username, expiresAt });
    } catch (e) {
      error.textContent = loginErrorText(e);
      password.value = "";
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
