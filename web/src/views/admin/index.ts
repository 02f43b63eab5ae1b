// The admin pages and their navigation, for an admin whose sign-in passed the second factor.
// Each page has an address ("#admin/users", "#admin/payments/<id>"...), so that reloading the
// tab or going back shows the same page. The gateway checks every call itself; a session that
// may not use AdminService never gets here.

import { h } from "../../dom";
import { AccountsPage } from "./accounts";
import { AuditPage } from "./audit";
import type { AdminPage } from "./common";
import { OperationsPage } from "./operations";
import { PaymentsPage } from "./payments";
import { UsersPage } from "./users";

type PageName = "users" | "accounts" | "payments" | "operations" | "audit";

const pages: [PageName, string][] = [
  ["users", "Users"],
  ["accounts", "Accounts"],
  ["payments", "Payments"],
  ["operations", "Operations"],
  ["audit", "Audit log"],
];

/** The parts of an admin address: "#admin/payments/abc" is ["payments", "abc"]. */
export function parseRoute(hash: string): { page: PageName; arg: string } | undefined {
  const m = /^#admin\/([a-z]+)(?:\/(.*))?$/.exec(hash);
  if (!m) return undefined;
  const page = m[1] as PageName;
  if (!pages.some(([p]) => p === page)) return undefined;
  return { page, arg: m[2] ?? "" };
}

export class AdminPages {
  /** The links, for the top bar. */
  readonly nav: HTMLElement;
  /** Where the pages are shown. */
  readonly el = h("div", { id: "admin", class: "admin" });
  private readonly made = new Map<PageName, AdminPage>();
  private readonly links = new Map<string, HTMLAnchorElement>();

  constructor() {
    const home = h("a", { href: "#", id: "nav-home", class: "nav-link" }, "My accounts");
    this.links.set("home", home);
    const items = pages.map(([p, label]) => {
      const a = h("a", { href: `#admin/${p}`, id: `nav-${p}`, class: "nav-link" }, label);
      this.links.set(p, a);
      return a;
    });
    this.nav = h("nav", { class: "admin-nav", id: "admin-nav", "aria-label": "Admin" }, home, items);
  }

  private page(name: PageName): AdminPage {
    let p = this.made.get(name);
    if (!p) {
      switch (name) {
        case "users":
          p = new UsersPage();
          break;
        case "accounts":
          p = new AccountsPage();
          break;
        case "payments":
          p = new PaymentsPage();
          break;
        case "operations":
          p = new OperationsPage();
          break;
        case "audit":
          p = new AuditPage();
          break;
      }
      this.made.set(name, p);
      this.el.append(p.el);
    }
    return p;
  }

  /** Shows the page of hash and returns true, or returns false for an address of no admin page. */
  route(hash: string): boolean {
    const r = parseRoute(hash);
    const current = r?.page ?? "home";
    for (const [name, a] of this.links) {
      if (name === current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (!r) {
      this.el.hidden = true;
      return false;
    }
    const shown = this.page(r.page);
    for (const p of this.made.values()) p.el.hidden = p !== shown;
    this.el.hidden = false;
    shown.show(r.arg);
    return true;
  }
}
