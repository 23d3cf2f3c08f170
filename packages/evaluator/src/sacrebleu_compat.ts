/** The sacrebleu release whose numbers and signature format these metrics reproduce. */
export const SACREBLEU_VERSION = '2.6.0';

/**
 * Python ≥ 3.12's built-in sum() of floats (Neumaier compensated summation), which sacrebleu uses
 * to add the log precisions.
 */
export function pySum(xs: number[]): number {
  let s = 0;
  let c = 0;
  for (const x of xs) {
    const t = s + x;
    if (Math.abs(s) >= Math.abs(x)) c += s - t + x;
    else c += x - t + s;
    s = t;
  }
  return c !== 0 && Number.isFinite(c) ? s + c : s;
}
