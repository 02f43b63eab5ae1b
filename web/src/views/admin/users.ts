// Admin page: users. Search and page through them; create one with an initial password (which
// the user must change at the first sign-in); disable, enable, reset the password, change the
// role, link and unlink accounts. A new admin's TOTP secret is shown once, here, and nowhere else.

import { adminClient } from "../../api";
import { h, replace } from "../../dom";
import type { SecondFactorEnrollment, User } from "../../gen/paygate/gateway/v1/admin_pb";
import {
  type AdminPage, adminErrorText, badge, busy, button, card, field, formatStamp, Latest, Pager, readOptions, resultArea, row, select,
  showResult, table, textInput,
} from "./common";

const minPassword = 10;

/** A random initial password: 16 characters an operator can read out without ambiguity. */
export function randomPassword(): string {
  const alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (v) => alphabet[v % alphabet.length]).join("");
}

/** The account ids typed in a list field: separated by commas, spaces or new lines. */
export function accountList(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).map((s) => s.trim()).filter((s) => s !== ""))];
}

function statusBadges(u: User): HTMLElement[] {
  const out = [badge(u.role === "admin" ? "Admin" : "Customer", u.role === "admin" ? "processing" : "")];
  if (u.disabled) out.push(badge("Disabled", "failed"));
  if (u.passwordChangeRequired) out.push(badge("Must change password", "queued"));
  if (u.role === "admin") out.push(u.secondFactorEnrolled ? badge("TOTP enrolled", "succeeded") : badge("No TOTP", "failed"));
  return out;
}

export class UsersPage implements AdminPage {
  readonly el: HTMLElement;
  private readonly query = textInput("users-query", { placeholder: "Part of a username", maxlength: 64, type: "search" });
  private readonly role = select("users-role", [["", "Any role"], ["customer", "Customers"], ["admin", "Admins"]]);
  private readonly search = h("button", { type: "submit", id: "users-search", class: "button primary small" }, "Search");
  private readonly list = h("div", { id: "users-list" });
  private readonly listStatus = h("p", { class: "muted small", id: "users-status", "aria-live": "polite" });
  private readonly pager = new Pager("users", () => void this.load());
  private readonly loads = new Latest();

  private readonly secretBox = h("section", { class: "card secret-card", id: "second-factor", hidden: true, "aria-labelledby": "second-factor-title" });
  private readonly detail = h("div", { id: "user-detail" });
  private readonly detailCard: HTMLElement;
  private selected: string | undefined;

  private readonly createName = textInput("create-username", { maxlength: 32, required: true });
  private readonly createPassword = textInput("create-password", { minlength: minPassword, maxlength: 256, required: true, class: "mono" });
  private readonly createRole = select("create-role", [["customer", "Customer"], ["admin", "Admin"]]);
  private readonly createAccounts = textInput("create-accounts", { placeholder: "bank1-1005, bank2-2003" });
  private readonly createSubmit = h("button", { type: "submit", id: "create-submit", class: "button primary" }, "Create user");
  private readonly createResult = resultArea("create-result");

  constructor() {
    const searchForm = h(
      "form",
      { class: "toolbar", id: "users-search-form", role: "search" },
      field("Username", this.query),
      field("Role", this.role),
      this.search,
    );
    searchForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.pager.reset();
      void this.load();
    });

    const generate = button("Generate", { id: "create-generate" });
    generate.addEventListener("click", () => {
      this.createPassword.value = randomPassword();
    });
    const createForm = h(
      "form",
      { class: "stack", id: "create-form", novalidate: true },
      field("Username", this.createName, "Starts with a letter; 3 to 32 letters, digits, '.', '_' or '-'."),
      h(
        "div",
        { class: "field" },
        h("label", { for: "create-password" }, "Initial password"),
        h("div", { class: "inline" }, this.createPassword, generate),
        h("p", { class: "hint" }, `At least ${minPassword} characters. Give it to the user; they must change it when they first sign in.`),
      ),
      field("Role", this.createRole),
      field("Accounts to link", this.createAccounts, "Optional. Each bank must confirm the username is the account's holder."),
      this.createSubmit,
      this.createResult,
    );
    createForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.create();
    });

    this.detailCard = card("user", "User", [], this.detail);
    this.detailCard.hidden = true;
    this.el = h(
      "div",
      { class: "admin-grid", id: "admin-users" },
      h("div", { class: "col" }, card("users", "Users", [], searchForm, this.listStatus, this.list, this.pager.el)),
      h("div", { class: "col" }, this.secretBox, this.detailCard, card("create-user", "Create a user", [], createForm)),
    );
  }

  show(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    const latest = this.loads.start();
    this.listStatus.textContent = "Loading…";
    try {
      const resp = await adminClient.listUsers({ query: this.query.value.trim(), role: this.role.value, pageSize: 25, pageToken: this.pager.token }, readOptions);
      if (!latest()) return;
      this.pager.loaded(resp.nextPageToken);
      this.listStatus.textContent = "";
      replace(
        this.list,
        table(
          "users-table",
          ["Username", "Status", "Accounts", "Created"],
          resp.users.map((u) => {
            const open = h("button", { type: "button", class: "link", "data-open-user": u.username }, u.username);
            open.addEventListener("click", () => void this.select(u.username));
            return row(
              { "data-username": u.username, class: u.username === this.selected ? "selected" : "" },
              open,
              h("span", { class: "badges" }, statusBadges(u)),
              h("span", { class: "mono small" }, u.accountIds.join(", ") || "—"),
              h("span", { class: "small muted" }, formatStamp(u.createTime)),
            );
          }),
          "No users match.",
        ),
      );
    } catch (e) {
      if (!latest()) return;
      this.listStatus.textContent = "";
      showResult(this.list, "error", `Users could not be loaded: ${adminErrorText(e)}`);
    }
  }

  /** Shows one user and the actions on it. */
  private async select(username: string): Promise<void> {
    this.selected = username;
    this.detailCard.hidden = false;
    for (const tr of this.list.querySelectorAll("tr[data-username]")) {
      tr.classList.toggle("selected", tr.getAttribute("data-username") === username);
    }
    try {
      const resp = await adminClient.getUser({ username }, readOptions);
      if (resp.user) this.renderUser(resp.user);
    } catch (e) {
      showResult(this.detail, "error", `${username} could not be loaded: ${adminErrorText(e)}`);
    }
  }

  /** Shows a TOTP enrollment, once: it is in no list and cannot be fetched again. */
  private showSecret(username: string, sf: SecondFactorEnrollment): void {
    const hide = button("I have saved it", { id: "second-factor-hide" }, "primary");
    hide.addEventListener("click", () => {
      replace(this.secretBox);
      this.secretBox.hidden = true;
    });
    replace(
      this.secretBox,
      h("header", { class: "card-head" }, h("h2", { id: "second-factor-title" }, `Second factor of ${username}`)),
      h("p", { class: "warn" }, "Shown once. Add it to the admin's authenticator app now; it cannot be shown again."),
      h("dl", { class: "kv" },
        h("dt", {}, "Secret"), h("dd", { id: "second-factor-secret", class: "mono secret" }, sf.secret),
        h("dt", {}, "otpauth URL"), h("dd", { id: "second-factor-url", class: "mono small secret" }, sf.otpauthUrl)),
      h("div", { class: "actions" }, hide),
    );
    this.secretBox.hidden = false;
    this.secretBox.scrollIntoView({ block: "nearest" });
  }

  private renderUser(u: User): void {
    const result = resultArea("user-result");
    const act = async (b: HTMLButtonElement, doing: string, f: () => Promise<{ user?: User } & Record<string, unknown>>, done: (r: Record<string, unknown>) => string) => {
      await busy(b, doing, async () => {
        try {
          const r = await f();
          if (r.user) this.renderUser(r.user);
          const text = done(r);
          showResult(this.detail.querySelector<HTMLElement>("#user-result") ?? result, "success", text);
          void this.load();
        } catch (e) {
          showResult(result, "error", adminErrorText(e));
        }
      });
    };

    // Accounts, each with Unlink.
    const accounts = u.accountIds.map((id) => {
      const unlink = button("Unlink", { "data-unlink": id });
      unlink.addEventListener("click", () =>
        void act(unlink, "Unlinking…", () => adminClient.unlinkAccount({ username: u.username, accountId: id }, readOptions), () => `${id} is no longer linked to ${u.username}. The money stays at the bank.`));
      return h("li", { class: "account", "data-account": id }, h("span", { class: "account-id" }, id), unlink);
    });
    const linkId = textInput("user-link-account", { placeholder: "bank1-1005", maxlength: 64 });
    const link = button("Link", { id: "user-link" });
    link.addEventListener("click", () => {
      const id = linkId.value.trim();
      if (id === "") {
        showResult(result, "error", "Enter the account to link.");
        linkId.focus();
        return;
      }
      void act(link, "Linking…", () => adminClient.linkAccount({ username: u.username, accountId: id }, readOptions), () => `${id} is linked to ${u.username}.`);
    });

    // Role.
    const role = select("user-role", [["customer", "Customer"], ["admin", "Admin"]], u.role);
    const setRole = button("Set role", { id: "user-set-role" });
    setRole.addEventListener("click", () =>
      void act(setRole, "Setting…", async () => {
        const r = await adminClient.setRole({ username: u.username, role: role.value }, readOptions);
        if (r.secondFactor) this.showSecret(u.username, r.secondFactor);
        return r;
      }, () => `${u.username} is ${role.value === "admin" ? "an admin" : "a customer"} now; their sessions ended.`));

    // Password.
    const password = textInput("user-reset-password", { minlength: minPassword, maxlength: 256, class: "mono" });
    const generate = button("Generate", { id: "user-reset-generate" });
    generate.addEventListener("click", () => {
      password.value = randomPassword();
    });
    const reset = button("Reset password", { id: "user-reset" });
    reset.addEventListener("click", () => {
      if (password.value.length < minPassword) {
        showResult(result, "error", `Enter an initial password of at least ${minPassword} characters.`);
        password.focus();
        return;
      }
      void act(reset, "Resetting…", () => adminClient.resetPassword({ username: u.username, initialPassword: password.value }, readOptions),
        (r) => `${u.username} must sign in with the new initial password and change it; ${sessions(r["revokedSessions"])} ended.`);
    });

    // Disable or enable.
    let standing: HTMLElement;
    if (u.disabled) {
      const enable = button("Enable", { id: "user-enable" }, "primary");
      enable.addEventListener("click", () =>
        void act(enable, "Enabling…", () => adminClient.enableUser({ username: u.username }, readOptions), () => `${u.username} can sign in again.`));
      standing = h("div", { class: "field" }, h("p", { class: "muted small" }, `${u.username} cannot sign in.`), h("div", { class: "inline" }, enable));
    } else {
      const reason = textInput("user-disable-reason", { maxlength: 200, placeholder: "Why, for the audit log" });
      const disable = button("Disable", { id: "user-disable", class: "button ghost small danger" });
      disable.addEventListener("click", () => {
        if (reason.value.trim() === "") {
          showResult(result, "error", "Give a reason for disabling the user; the audit log records it.");
          reason.focus();
          return;
        }
        void act(disable, "Disabling…", () => adminClient.disableUser({ username: u.username, reason: reason.value.trim() }, readOptions),
          (r) => `${u.username} is disabled; ${sessions(r["revokedSessions"])} ended.`);
      });
      standing = h("div", { class: "field" }, h("label", { for: "user-disable-reason" }, "Disable, because"), h("div", { class: "inline" }, reason, disable));
    }

    replace(
      this.detail,
      h("div", { class: "user-head" }, h("span", { class: "user-title", id: "user-name-title" }, u.username), h("span", { class: "badges" }, statusBadges(u))),
      h("p", { class: "muted small" }, `Created ${formatStamp(u.createTime)}`),
      h("h3", {}, "Accounts"),
      accounts.length > 0 ? h("ul", { class: "accounts linked", id: "user-accounts" }, accounts) : h("p", { class: "muted small", id: "user-accounts" }, "No linked accounts."),
      h("div", { class: "field" }, h("label", { for: "user-link-account" }, "Link an account"), h("div", { class: "inline" }, linkId, link)),
      h("h3", {}, "Role"),
      h("div", { class: "inline" }, role, setRole),
      h("h3", {}, "Password"),
      h("div", { class: "field" }, h("label", { for: "user-reset-password" }, "New initial password"), h("div", { class: "inline" }, password, generate, reset)),
      h("h3", {}, "Access"),
      standing,
      result,
    );
  }

  private async create(): Promise<void> {
    const username = this.createName.value.trim();
    const accounts = accountList(this.createAccounts.value);
    if (!/^[a-zA-Z][a-zA-Z0-9._-]{2,31}$/.test(username)) {
      showResult(this.createResult, "error", "A username starts with a letter and has 3 to 32 letters, digits, '.', '_' or '-'.");
      this.createName.focus();
      return;
    }
    if (this.createPassword.value.length < minPassword) {
      showResult(this.createResult, "error", `The initial password needs at least ${minPassword} characters.`);
      this.createPassword.focus();
      return;
    }
    await busy(this.createSubmit, "Creating…", async () => {
      try {
        const r = await adminClient.createUser({ username, initialPassword: this.createPassword.value, role: this.createRole.value, accountIds: accounts }, readOptions);
        const u = r.user;
        showResult(this.createResult, "success", `Created ${username}${u && u.accountIds.length > 0 ? ` with ${u.accountIds.join(", ")}` : ""}. They must change the password when they first sign in.`);
        if (r.secondFactor) this.showSecret(username, r.secondFactor);
        this.createName.value = "";
        this.createPassword.value = "";
        this.createAccounts.value = "";
        this.createRole.value = "customer";
        void this.load();
        void this.select(username);
      } catch (e) {
        showResult(this.createResult, "error", adminErrorText(e));
      }
    });
  }
}

function sessions(n: unknown): string {
  const k = typeof n === "number" ? n : 0;
  return `${k} session${k === 1 ? "" : "s"}`;
}
