// Admin page: the audit log, newest first: every admin action and refused admin attempt, who
// made it, from where, on what, and what it changed. "Verify chain" checks the log's hash chain
// from its first entry and names the first broken entry.

import { adminClient } from "../../api";
import { h, replace } from "../../dom";
import type { AuditEntry } from "../../gen/paygate/gateway/v1/admin_pb";
import { type AdminPage, adminErrorText, badge, busy, button, card, field, formatStamp, Latest, Pager, readOptions, row, showResult, shortId, table, textInput } from "./common";

export class AuditPage implements AdminPage {
  readonly el: HTMLElement;
  private readonly actor = textInput("audit-actor", { maxlength: 64, placeholder: "Any admin" });
  private readonly list = h("div", { id: "audit-list" });
  private readonly status = h("p", { class: "muted small", id: "audit-status", "aria-live": "polite" });
  private readonly verifyResult = h("div", { id: "verify-result", role: "status", "aria-live": "polite" });
  private readonly pager = new Pager("audit", () => void this.load(), ["← Newer", "Older →"]);
  private readonly loads = new Latest();

  constructor() {
    const verify = button("Verify chain", { id: "audit-verify" }, "primary");
    verify.addEventListener("click", () => void busy(verify, "Verifying…", () => this.verify()));
    const refresh = button("Refresh", { id: "audit-refresh" });
    refresh.addEventListener("click", () => void this.load());
    const form = h("form", { class: "toolbar", id: "audit-form", role: "search" }, field("Actor", this.actor),
      h("button", { type: "submit", class: "button primary small", id: "audit-search" }, "Filter"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.pager.reset();
      void this.load();
    });
    this.el = h(
      "div",
      { class: "admin-wide", id: "admin-audit" },
      card("audit", "Audit log", [refresh, verify], this.verifyResult, form, this.status, this.list, this.pager.el),
    );
  }

  show(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    const latest = this.loads.start();
    this.status.textContent = "Loading…";
    try {
      const resp = await adminClient.listAuditLog({ actor: this.actor.value.trim(), pageSize: 50, pageToken: this.pager.token }, readOptions);
      if (!latest()) return;
      this.pager.loaded(resp.nextPageToken);
      this.status.textContent = "";
      replace(
        this.list,
        table("audit-table", ["#", "Time", "Actor", "Action", "Target", "Outcome", "Details"], resp.entries.map((e) => entryRow(e)), "The audit log is empty."),
      );
    } catch (e) {
      if (!latest()) return;
      this.status.textContent = "";
      showResult(this.list, "error", `The audit log could not be loaded: ${adminErrorText(e)}`);
    }
  }

  private async verify(): Promise<void> {
    try {
      const r = await adminClient.verifyAuditLog({}, { timeoutMs: 60000 });
      if (r.ok) {
        showResult(this.verifyResult, "success", `Chain OK: ${r.entries} entr${r.entries === 1n ? "y" : "ies"} checked, every hash right and linked to the one before.`);
      } else {
        showResult(this.verifyResult, "error", `Chain broken at entry ${r.firstBrokenSeq}: ${r.problem} (${r.entries} checked).`);
        this.verifyResult.dataset["brokenSeq"] = String(r.firstBrokenSeq);
      }
      this.verifyResult.dataset["ok"] = String(r.ok);
    } catch (e) {
      showResult(this.verifyResult, "error", `The chain could not be verified: ${adminErrorText(e)}`);
    }
  }
}

function entryRow(e: AuditEntry): HTMLTableRowElement {
  const ok = e.outcome === "ok";
  const details: [string, string][] = [
    ["Peer", e.peer],
    ["Certificate", e.actorCertificate],
    ["Request id", e.requestId],
    ["Before", e.before],
    ["After", e.after],
    ["Hash", e.hash],
    ["Previous hash", e.prevHash],
  ];
  return row(
    { "data-seq": String(e.seq), "data-action": e.action, "data-outcome": e.outcome },
    h("span", { class: "num" }, String(e.seq)),
    h("span", { class: "small" }, formatStamp(e.time)),
    e.actor || h("span", { class: "muted" }, "(not signed in)"),
    h("span", { class: "mono small" }, e.action),
    h("span", { class: "mono small" }, e.target),
    h("span", { class: "badges" }, badge(ok ? "OK" : e.outcome.replace(/_/g, " "), ok ? "succeeded" : "failed"), e.reason ? h("span", { class: "small muted" }, e.reason) : null),
    h(
      "details",
      { class: "audit-details" },
      h("summary", {}, e.requestId ? shortId(e.requestId) : "More"),
      h("dl", { class: "kv small" }, details.filter(([, v]) => v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, v)])),
    ),
  );
}
