// The change-password page, shown after signing in with an initial password (one an admin set
// when creating the user or resetting its password). Until it is changed the gateway refuses
// everything else, so the page offers nothing else. Changing it ends every session of the user,
// this one included: the user signs in again with the new password.

import { Code, ConnectError } from "@connectrpc/connect";

import { authClient, errorInfo, isUnreachable, setToken } from "../api";
import { h, replace } from "../dom";
import type { Session } from "../session";

const minPassword = 10;

/** Words for an error ChangePassword answered with. */
export function changePasswordErrorText(err: unknown): string {
  if (isUnreachable(err)) return "Cannot reach the gateway. Check your connection and try again.";
  if (!(err instanceof ConnectError)) return "The password was not changed. Try again.";
  const info = errorInfo(err);
  switch (err.code) {
    case Code.Unauthenticated:
      return info.reason === "invalid_credentials"
        ? "The current password is wrong. Sign in again."
        : "Your session has ended. Sign in again.";
    case Code.ResourceExhausted:
      return "Too many failed attempts. Try again later.";
    case Code.InvalidArgument:
      return err.rawMessage.replace(/^validation error:\s*/, "");
    default:
      return `The password was not changed: ${err.rawMessage}`;
  }
}

/**
 * Renders the change-password page into root for the session s, which the gateway allows only
 * ChangePassword and Logout. currentPassword is the one the user has just signed in with.
 * onChanged is called once the password is changed (every session has ended); onCancel signs out.
 */
export function renderChangePassword(root: HTMLElement, s: Session, currentPassword: string, onChanged: () => void, onCancel: () => void): void {
  setToken(s.token);
  const fresh = h("input", { id: "change-new", name: "new-password", type: "password", autocomplete: "new-password", required: true, minlength: minPassword });
  const again = h("input", { id: "change-again", name: "repeat-password", type: "password", autocomplete: "new-password", required: true });
  const error = h("p", { id: "change-error", class: "form-error", role: "alert" });
  const submit = h("button", { id: "change-submit", type: "submit", class: "button primary wide" }, "Change password");
  const cancel = h("button", { id: "change-cancel", type: "button", class: "button ghost wide" }, "Sign out");

  const form = h(
    "form",
    { id: "change-form", class: "stack", novalidate: true, "aria-describedby": "change-error" },
    h("div", { class: "field" }, h("label", { for: "change-new" }, "New password"), fresh,
      h("p", { class: "hint" }, `At least ${minPassword} characters, not the one you were given.`)),
    h("div", { class: "field" }, h("label", { for: "change-again" }, "New password again"), again),
    error,
    submit,
    cancel,
  );

  cancel.addEventListener("click", async () => {
    try {
      await authClient.logout({}, { timeoutMs: 5000 });
    } catch {
      // The token expires anyway.
    }
    setToken(undefined);
    onCancel();
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    error.textContent = "";
    if (fresh.value.length < minPassword) {
      error.textContent = `Choose a password of at least ${minPassword} characters.`;
      fresh.focus();
      return;
    }
    if (fresh.value === currentPassword) {
      error.textContent = "Choose a password other than the one you were given.";
      fresh.focus();
      return;
    }
    if (again.value !== fresh.value) {
      error.textContent = "The two passwords differ.";
      again.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Changing…";
    try {
      await authClient.changePassword({ currentPassword, newPassword: fresh.value }, { timeoutMs: 15000 });
      setToken(undefined);
      onChanged();
    } catch (e) {
      error.textContent = changePasswordErrorText(e);
      submit.disabled = false;
      submit.textContent = "Change password";
    }
  });

  replace(
    root,
    h(
      "main",
      { class: "login" },
      h(
        "section",
        { class: "card login-card", "aria-labelledby": "change-title" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "paygate"),
        h("h1", { id: "change-title" }, "Choose a new password"),
        h("p", { class: "muted" }, `Signed in as ${s.username} with a password an administrator set. Choose your own to continue.`),
        form,
      ),
    ),
  );
  fresh.focus();
}
