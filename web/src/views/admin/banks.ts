// The names of the banks the gateway knows, for the admin pages' bank choosers. GetOperations
// reports every bank; its list is fetched once and kept until asked again.

import { adminClient } from "../../api";
import { h, replace } from "../../dom";
import { readOptions } from "./common";

let names: Promise<string[]> | undefined;

/** The banks' names in the gateway's order; refresh fetches them again. */
export function bankNames(refresh = false): Promise<string[]> {
  if (!names || refresh) {
    const p = adminClient.getOperations({ pageSize: 1 }, readOptions).then((r) => r.banks.map((b) => b.bank));
    names = p;
    p.catch(() => {
      if (names === p) names = undefined; // ask again next time
    });
  }
  return names;
}

/** Fills a select with the bank names, keeping its choice (or choosing want). */
export async function fillBanks(sel: HTMLSelectElement, want?: string): Promise<void> {
  const keep = want ?? sel.value;
  const banks = await bankNames();
  replace(sel, banks.map((b) => h("option", { value: b, selected: b === keep }, b)));
}
