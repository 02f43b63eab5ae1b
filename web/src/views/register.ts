// The registration page: a username, a password, and the bank accounts to link, each with the
// one-time enrollment code its bank sent to the holder. The bank checks the code; knowing the
// holder's name is not enough. If any account is refused, nothing is created.

import { Code, ConnectError } from "@connectrpc/connect";

import { authClient, errorInfo, isUnreachable } from "../api";
import { h, replace } from "../dom";

/** What the gateway accepts as a username (RegisterRequest.username). */
const usernamePattern = /^[a-zA-Z][a-zA-Z0-9._-]{2,31}$/;
const minPassword = 10;
/** RegisterRequest.accounts holds 1 to 20 accounts. */
const maxAccounts = 20;

type Field = "username" | "password";

/** Where a refusal belongs: a field, an account row (by its index in the request), or the form. */
export interface RegisterError {
  text: string;
  field?: Field;
  account?: number;
}

function retryIn(seconds: string | undefined): string {
  const secs = Number(seconds);
  if (!Number.isFinite(secs) || secs <= 0) return "later";
  const n = Math.ceil(secs);
  return `in ${n} second${n === 1 ? "" : "s"}`;
}

/** Words for an error Register answered with, and where it belongs. */
export function registerErrorText(err: unknown): RegisterError {
  if (isUnreachable(err)) return { text: "Cannot reach the gateway. Check your connection and try again." };
  if (!(err instanceof ConnectError)) return { text: "Registration failed. Try again." };
  const info = errorInfo(err);
  switch (info.reason) {
    case "enrollment_refused": {
      // The message names the account's place in the request ("accounts[1]: ...") and never
      // the cause: a wrong, used or expired code, or an account that cannot be linked.
      const m = /accounts\[(\d+)\]/.exec(err.rawMessage);
      return {
        text: "This account cannot be linked with this code. Check the account number and the code your bank sent you; a code works once, for one username, and expires.",
        account: m ? Number(m[1]) : 0,
      };
    }
    case "username_taken":
      return { text: "This username is taken. Choose another.", field: "username" };
    case "register_throttled":
      return { text: `Too many refused attempts. Try again ${retryIn(info.metadata["retry_after_seconds"])}.` };
    case "bank_unavailable":
      return { text: "A bank of these accounts is not answering. Try again in a moment; nothing was created." };
  }
  switch (err.code) {
    case Code.InvalidArgument: {
      const msg = err.rawMessage.replace(/^validation error:\s*/, "");
      if (/password/.test(msg)) return { text: `Choose a password of at least ${minPassword} characters.`, field: "password" };
      if (/username/.test(msg)) return { text: "A username starts with a letter and has 3 to 32 letters, digits, '.', '_' or '-'.", field: "username" };
      return { text: `Check the form: ${msg}` };
    }
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return { text: "The gateway is not answering. Try again in a moment." };
    default:
      return { text: `Registration failed: ${err.rawMessage}` };
  }
}

interface AccountRow {
  el: HTMLElement;
  account: HTMLInputElement;
  code: HTMLInputElement;
  error: HTMLElement;
}

/**
 * Renders the registration page into root. onRegistered gets the new username (registering does
 * not sign in); onCancel goes back to sign-in.
 */
export function renderRegister(root: HTMLElement, onRegistered: (username: string) => void, onCancel: () => void): void {
  const username = h("input", { id: "register-username", name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false", maxlength: 32 });
  const password = h("input", { id: "register-password", name: "password", type: "password", autocomplete: "new-password", required: true, minlength: minPassword });
  const fieldErrors: Record<Field, HTMLElement> = {
    username: h("p", { id: "register-username-error", class: "field-error" }),
    password: h("p", { id: "register-password-error", class: "field-error" }),
  };
  const rowsEl = h("div", { id: "register-accounts", class: "stack" });
  const addAccount = h("button", { id: "register-add-account", type: "button", class: "button ghost small" }, "Add another account");
  const error = h("p", { id: "register-error", class: "form-error", role: "alert" });
  const submit = h("button", { id: "register-submit", type: "submit", class: "button primary wide" }, "Create account");
  const cancel = h("button", { id: "register-cancel", type: "button", class: "button ghost wide" }, "Back to sign in");
  const rows: AccountRow[] = [];

  // Rows are numbered by their place in the form, which is their index in the request.
  function renumber(): void {
    rows.forEach((r, i) => {
      r.el.dataset.index = String(i);
      r.account.id = `register-account-${i}`;
      r.code.id = `register-code-${i}`;
      r.error.id = `register-account-error-${i}`;
      r.account.setAttribute("aria-describedby", r.error.id);
      r.code.setAttribute("aria-describedby", r.error.id);
      const [accountLabel, codeLabel] = r.el.querySelectorAll("label");
      accountLabel?.setAttribute("for", r.account.id);
      codeLabel?.setAttribute("for", r.code.id);
      const remove = r.el.querySelector<HTMLButtonElement>(".remove-account");
      if (remove) remove.hidden = rows.length === 1;
    });
    addAccount.hidden = rows.length >= maxAccounts;
  }

  function addRow(): AccountRow {
    const account = h("input", { name: "account", required: true, autocomplete: "off", autocapitalize: "none", spellcheck: "false", placeholder: "bank1-1004", maxlength: 64 });
    const code = h("input", {
      name: "enrollment-code", required: true, autocomplete: "one-time-code", autocapitalize: "characters", spellcheck: "false",
      placeholder: "K7QX-3MZD-9TRA-WP4C", maxlength: 64, class: "mono",
    });
    const rowError = h("p", { class: "field-error" });
    const remove = h("button", { type: "button", class: "button ghost small remove-account" }, "Remove");
    const el = h(
      "fieldset",
      { class: "account-row" },
      h("div", { class: "field" }, h("label", {}, "Account"), account),
      h("div", { class: "field" }, h("label", {}, "Enrollment code"), code),
      rowError,
      remove,
    );
    const row: AccountRow = { el, account, code, error: rowError };
    remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(row), 1);
      el.remove();
      renumber();
      rows[0]?.account.focus();
    });
    rows.push(row);
    rowsEl.appendChild(el);
    renumber();
    return row;
  }

  function clearErrors(): void {
    error.textContent = "";
    for (const f of Object.keys(fieldErrors) as Field[]) {
      fieldErrors[f].textContent = "";
      (f === "username" ? username : password).removeAttribute("aria-invalid");
    }
    for (const r of rows) {
      r.error.textContent = "";
      r.account.removeAttribute("aria-invalid");
      r.code.removeAttribute("aria-invalid");
    }
  }

  function show(e: RegisterError): void {
    if (e.field) {
      const input = e.field === "username" ? username : password;
      fieldErrors[e.field].textContent = e.text;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    const row = e.account !== undefined ? rows[e.account] : undefined;
    if (row) {
      row.error.textContent = e.text;
      row.account.setAttribute("aria-invalid", "true");
      row.code.setAttribute("aria-invalid", "true");
      row.code.focus();
      return;
    }
    error.textContent = e.text;
  }

  /** The mistakes the gateway would refuse, found before sending. */
  function check(): RegisterError | undefined {
    if (!usernamePattern.test(username.value.trim())) {
      return { text: "A username starts with a letter and has 3 to 32 letters, digits, '.', '_' or '-'.", field: "username" };
    }
    if (password.value.length < minPassword) return { text: `Choose a password of at least ${minPassword} characters.`, field: "password" };
    const seen = new Set<string>();
    for (const [i, r] of rows.entries()) {
      const id = r.account.value.trim();
      if (id === "" || r.code.value.trim() === "") {
        return { text: "Enter the account and the enrollment code your bank sent you for it.", account: i };
      }
      if (seen.has(id)) return { text: "This account is listed twice.", account: i };
      seen.add(id);
    }
    return undefined;
  }

  addAccount.addEventListener("click", () => addRow().account.focus());
  cancel.addEventListener("click", onCancel);

  const form = h(
    "form",
    { id: "register-form", class: "stack", novalidate: true, "aria-describedby": "register-error" },
    h("div", { class: "field" }, h("label", { for: "register-username" }, "Username"), username, fieldErrors.username),
    h("div", { class: "field" }, h("label", { for: "register-password" }, "Password"), password,
      h("p", { class: "hint" }, `At least ${minPassword} characters.`), fieldErrors.password),
    h("p", { class: "hint" }, "Your bank sends a one-time enrollment code for each of your accounts. It proves the account is yours."),
    rowsEl,
    addAccount,
    error,
    submit,
    cancel,
  );

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    clearErrors();
    const problem = check();
    if (problem) {
      show(problem);
      return;
    }
    submit.disabled = true;
    submit.textContent = "Creating account…";
    const name = username.value.trim();
    try {
      await authClient.register(
        {
          username: name,
          password: password.value,
          accounts: rows.map((r) => ({ accountId: r.account.value.trim(), enrollmentCode: r.code.value.trim() })),
        },
        { timeoutMs: 20000 },
      );
      onRegistered(name);
    } catch (e) {
      show(registerErrorText(e));
      submit.disabled = false;
      submit.textContent = "Create account";
    }
  });

  addRow();
  replace(
    root,
    h(
      "main",
      { class: "login" },
      h(
        "section",
        { class: "card login-card register-card", "aria-labelledby": "register-title" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "paygate"),
        h("h1", { id: "register-title" }, "Create an account"),
        h("p", { class: "muted" }, "Link the bank accounts you hold."),
        form,
      ),
    ),
  );
  username.focus();
}
