// What the admin pages share: words for errors, tables, pagers, form fields, result lines and
// the request id of an intended action.

import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";

import { errorInfo, isUnreachable, requestIdHeader } from "../../api";
import { type Child, h, replace } from "../../dom";
import { formatDecimal } from "../../money";
import { newPaymentId } from "../../payments";

/**
 * The words for an error an admin call answered with: the server's own message, which names
 * the field or the thing refused, and its reason in brackets for the operator's reference.
 */
export function adminErrorText(err: unknown): string {
  if (isUnreachable(err)) return "Cannot reach the gateway. Check the connection and try again.";
  if (!(err instanceof ConnectError)) return err instanceof Error ? err.message : String(err);
  const reason = errorInfo(err).reason;
  const msg = err.rawMessage.replace(/^validation error:\s*/, "") || err.code.toString();
  return reason ? `${msg} (${reason})` : msg;
}

export type ResultKind = "success" | "error" | "info";

/** Replaces el's content with one result line. */
export function showResult(el: HTMLElement, kind: ResultKind, text: string): void {
  replace(el, h("p", { class: `result ${kind}`, "data-kind": kind }, text));
}

/** A result area: role status, announced politely. */
export function resultArea(id: string): HTMLElement {
  return h("div", { id, class: "admin-result", role: "status", "aria-live": "polite" });
}

/** A labelled form field; the control must carry the id. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id;
  if (hint) control.setAttribute("aria-describedby", `${id}-hint`);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null,
  );
}

/** A select of (value, label) options. */
export function select(id: string, options: [string, string][], value = ""): HTMLSelectElement {
  return h("select", { id, name: id }, options.map(([v, l]) => h("option", { value: v, selected: v === value }, l)));
}

/** A text input with the settings an id or a name needs (no capitals, no spelling). */
export function textInput(id: string, attrs: Record<string, string | number | boolean> = {}): HTMLInputElement {
  return h("input", { id, name: id, autocomplete: "off", autocapitalize: "none", spellcheck: "false", ...attrs });
}

/** A small button. */
export function button(text: string, attrs: Record<string, string | boolean> = {}, kind: "primary" | "ghost" = "ghost"): HTMLButtonElement {
  return h("button", { type: "button", class: `button ${kind} small`, ...attrs }, text);
}

/**
 * Runs f with the button disabled (and its text changed) while it runs, so that a double click
 * sends one call.
 */
export async function busy<T>(b: HTMLButtonElement, text: string, f: () => Promise<T>): Promise<T | undefined> {
  if (b.disabled) return undefined;
  const old = b.textContent;
  b.disabled = true;
  b.textContent = text;
  try {
    return await f();
  } finally {
    b.disabled = false;
    b.textContent = old;
  }
}

/** A table with a header row; rows are lists of cells. */
export function table(id: string, headers: string[], rows: HTMLTableRowElement[], empty: string): HTMLElement {
  if (rows.length === 0) return h("p", { id, class: "muted", "data-empty": "true" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { id, class: "table" }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
  );
}

/** A table row; attrs go on the tr. */
export function row(attrs: Record<string, string>, ...cells: (Child | Child[])[]): HTMLTableRowElement {
  return h("tr", attrs, cells.map((c) => h("td", {}, ...(Array.isArray(c) ? c : [c]))));
}

/** A number cell (right-aligned, tabular). */
export function num(text: string): HTMLElement {
  return h("span", { class: "num" }, text);
}

/** An amount in minor units as decimal text in currency ("1,250.00"). */
export function amount(minor: bigint, currency: string): string {
  return formatDecimal(minor, currency);
}

/** A full date and time, to the second, in the browser's time zone. */
export function formatStamp(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/** The first characters of a long id, the whole of it in the title. */
export function shortId(id: string, n = 8): HTMLElement {
  return h("span", { class: "mono", title: id }, id.length > n + 1 ? `${id.slice(0, n)}…` : id);
}

/** A small coloured label; kind is one of the badge classes of style.css. */
export function badge(text: string, kind: string): HTMLElement {
  return h("span", { class: `badge ${kind}` }, text);
}

/**
 * The request id of one intended action (opening an account, a deposit, a withdrawal). It is
 * made once per intended action and sent again unchanged when the same action is retried (a
 * double click, a retry after the gateway did not answer), so the bank applies it at most once.
 * Asking for other parameters, or starting over after an answer, makes a new one.
 */
export class Intent {
  private id = newPaymentId();
  private key: string | undefined;

  /** The id to send for an action with these parameters. */
  idFor(params: unknown): string {
    const key = JSON.stringify(params, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
    if (this.key !== undefined && this.key !== key) this.id = newPaymentId();
    this.key = key;
    return this.id;
  }

  /** The action was answered: the next one is a new action. */
  done(): void {
    this.id = newPaymentId();
    this.key = undefined;
  }

  /** The current id, for showing (and for tests). */
  get current(): string {
    return this.id;
  }
}

/** Call options of an admin action with request id id: a deadline and the request id header. */
export function withRequestId(id: string): { timeoutMs: number; headers: Record<string, string> } {
  return { timeoutMs: 20000, headers: { [requestIdHeader]: id } };
}

/** The options of a read: a deadline. */
export const readOptions = { timeoutMs: 15000 };

/**
 * Page tokens of a list that pages forward: tokens[i] is the token of page i. It draws the
 * "Newer"/"Older" (or "Previous"/"Next") buttons and calls load when the page changes.
 */
export class Pager {
  readonly el: HTMLElement;
  private tokens: string[] = [""];
  private page = 0;
  private next = "";
  private readonly prev: HTMLButtonElement;
  private readonly fwd: HTMLButtonElement;
  private readonly label = h("span", { class: "muted small" });

  constructor(id: string, private readonly load: () => void, labels: [string, string] = ["← Previous", "Next →"]) {
    this.prev = button(labels[0], { id: `${id}-prev` });
    this.fwd = button(labels[1], { id: `${id}-next` });
    this.prev.addEventListener("click", () => {
      if (this.page > 0) {
        this.page -= 1;
        this.load();
      }
    });
    this.fwd.addEventListener("click", () => {
      if (this.next) {
        this.tokens[this.page + 1] = this.next;
        this.page += 1;
        this.load();
      }
    });
    this.el = h("nav", { class: "pager", "aria-label": "Pages" }, this.prev, this.label, this.fwd);
    this.update();
  }

  /** The token of the page to load. */
  get token(): string {
    return this.tokens[this.page] ?? "";
  }

  /** Back to the first page (new filters). */
  reset(): void {
    this.tokens = [""];
    this.page = 0;
    this.next = "";
    this.update();
  }

  /** Records the answer's next_page_token. */
  loaded(nextPageToken: string): void {
    this.next = nextPageToken;
    this.update();
  }

  private update(): void {
    this.prev.disabled = this.page === 0;
    this.fwd.disabled = this.next === "";
    this.label.textContent = `Page ${this.page + 1}`;
    this.el.hidden = this.page === 0 && this.next === "";
  }
}

/** A card with a title, optional buttons on the right of its head, and a body. */
export function card(id: string, title: string, head: Child[], ...body: (Child | Child[])[]): HTMLElement {
  return h(
    "section",
    { class: "card", id, "aria-labelledby": `${id}-title` },
    h("header", { class: "card-head" }, h("h2", { id: `${id}-title` }, title), head.length > 0 ? h("div", { class: "card-tools" }, head) : null),
    ...body,
  );
}

/** An admin page: what the router shows and hides. */
export interface AdminPage {
  readonly el: HTMLElement;
  /** Called when the page is shown; arg is the rest of the route ("#admin/payments/<arg>"). */
  show(arg: string): void;
}

/**
 * Orders the answers of a list that is loaded again while a load is on its way (a search
 * started before the last one answered): only the latest load's answer is shown.
 */
export class Latest {
  private n = 0;

  /** Starts a load; the function says whether it is still the latest one. */
  start(): () => boolean {
    const k = ++this.n;
    return () => k === this.n;
  }
}
