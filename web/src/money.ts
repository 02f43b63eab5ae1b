// Amounts are exact: integer minor units (bigint, as the API's int64) converted from and to
// decimal text with string arithmetic only, never through floating point.

// ISO 4217 minor-unit digits of the currencies paygate knows (internal/money has the same
// table); others are treated as two.
const exponents: Record<string, number> = {
  JPY: 0, KRW: 0, VND: 0, CLP: 0, ISK: 0, UGX: 0, XAF: 0, XOF: 0,
  BHD: 3, KWD: 3, OMR: 3, JOD: 3, TND: 3, IQD: 3, LYD: 3,
};

/** The largest amount the API accepts: 10^15 minor units. */
export const maxAmount = 10n ** 15n;

/** The number of minor-unit digits of currency: 2 for USD, 0 for JPY, 3 for BHD. */
export function exponent(currency: string): number {
  return exponents[currency] ?? 2;
}

/** A reason an amount the user typed was refused. */
export class AmountError extends Error {
  override name = "AmountError";
}

/**
 * Converts decimal text such as "25", "25.5" or "1,250.00" into minor units of currency,
 * exactly. It refuses anything that is not a plain positive decimal, more fractional digits than
 * the currency has (unless they are zeros), zero, and amounts above maxAmount.
 */
export function parseAmount(text: string, currency: string): bigint {
  const exp = exponent(currency);
  const s = text.trim().replace(/[,\s_]/g, "");
  const m = /^(\d*)(?:\.(\d*))?$/.exec(s);
  if (s === "" || s === "." || m === null) {
    throw new AmountError(exp > 0 ? `Enter an amount like 25.${"0".repeat(exp)}.` : "Enter a whole amount like 25.");
  }
  const whole = m[1] ?? "";
  let frac = (m[2] ?? "").replace(/0+$/, "");
  if (frac.length > exp) {
    throw new AmountError(
      exp === 0 ? `${currency} has no minor unit: enter a whole amount.` : `${currency} amounts have at most ${exp} decimal places.`,
    );
  }
  frac = frac.padEnd(exp, "0");
  const digits = (whole + frac).replace(/^0+/, "");
  if (digits === "") {
    throw new AmountError("The amount must be greater than zero.");
  }
  if (digits.length > 19) {
    throw new AmountError("The amount is too large.");
  }
  const minor = BigInt(digits);
  if (minor > maxAmount) {
    throw new AmountError(`The amount is too large: at most ${formatAmount(maxAmount, currency)}.`);
  }
  return minor;
}

/** Writes minor units as decimal text with the currency's digits and thousands separators: "1,250.00". */
export function formatDecimal(minor: bigint, currency: string): string {
  const exp = exponent(currency);
  const neg = minor < 0n;
  let digits = (neg ? -minor : minor).toString().padStart(exp + 1, "0");
  const frac = exp > 0 ? digits.slice(digits.length - exp) : "";
  digits = exp > 0 ? digits.slice(0, digits.length - exp) : digits;
  const grouped = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return (neg ? "-" : "") + grouped + (frac ? "." + frac : "");
}

/** formatDecimal followed by the currency code: "1,250.00 USD". */
export function formatAmount(minor: bigint, currency: string): string {
  return `${formatDecimal(minor, currency)} ${currency}`;
}
