// Accuracy, precision / recall / F1 (per class, macro, micro, weighted) with scikit-learn's
// conventions, and exact match with HF `evaluate`'s options.
import { metricError } from './errors';

export type Label = string | number | boolean;

function checkPair(predictions: unknown, references: unknown): asserts predictions is Label[] {
  if (!Array.isArray(predictions)) throw metricError('predictions: expected an array');
  if (!Array.isArray(references)) throw metricError('references: expected an array');
  if (predictions.length !== references.length) {
    throw metricError(`references: has ${references.length} entries but there are ${predictions.length} predictions`);
  }
}

/** Fraction of predictions equal (===) to their reference; 0 for no examples. */
export function accuracy(predictions: Label[], references: Label[]): number {
  checkPair(predictions, references);
  if (predictions.length === 0) return 0;
  let ok = 0;
  for (let i = 0; i < predictions.length; i++) if (predictions[i] === references[i]) ok++;
  return ok / predictions.length;
}

export interface ClassScores {
  precision: number;
  recall: number;
  f1: number;
  /** Number of references of this class. */
  support: number;
}

export interface PrecisionRecallF1 {
  /** Classes in sorted order (sklearn's unique_labels of references and predictions, unless given). */
  labels: Label[];
  perClass: ClassScores[];
  /** Unweighted mean over classes. */
  macro: Omit<ClassScores, 'support'>;
  /** From the total true positives, false positives and false negatives. */
  micro: Omit<ClassScores, 'support'>;
  /** Mean over classes weighted by support. */
  weighted: Omit<ClassScores, 'support'>;
  accuracy: number;
}

export interface PrecisionRecallF1Options {
  /** Classes to report (default: every label seen in references or predictions, sorted). */
  labels?: Label[];
  /** Value of an undefined ratio (0/0), as sklearn's zero_division; default 0. */
  zeroDivision?: number;
}

function sortLabels(xs: Label[]): Label[] {
  return [...xs].sort((a, b) => {
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    const sa = String(a);
    const sb = String(b);
    return sa < sb ? -1 : sa > sb ? 1 : 0;
  });
}

/** Precision, recall and F1 per class and averaged (macro, micro, weighted), as sklearn computes them. */
export function precisionRecallF1(predictions: Label[], references: Label[], opts: PrecisionRecallF1Options = {}): PrecisionRecallF1 {
  checkPair(predictions, references);
  const zd = opts.zeroDivision ?? 0;
  const labels = opts.labels ? [...opts.labels] : sortLabels([...new Set<Label>([...references, ...predictions])]);
  const index = new Map<Label, number>();
  labels.forEach((l, i) => index.set(l, i));
  const tp = new Float64Array(labels.length);
  const predCount = new Float64Array(labels.length);
  const refCount = new Float64Array(labels.length);
  for (let i = 0; i < predictions.length; i++) {
    const p = index.get(predictions[i]);
    const r = index.get(references[i]);
    if (p !== undefined) predCount[p]++;
    if (r !== undefined) refCount[r]++;
    if (p !== undefined && p === r) tp[p]++;
  }
  const div = (a: number, b: number) => (b === 0 ? zd : a / b);
  // sklearn: F1 = 2·tp / (2·tp + fp + fn) = 2·tp / (predicted + actual); 0/0 → zero_division.
  const f1Of = (tpc: number, pc: number, rc: number) => (pc + rc === 0 ? zd : (2 * tpc) / (pc + rc));
  const perClass: ClassScores[] = labels.map((_, k) => {
    const precision = div(tp[k], predCount[k]);
    const recall = div(tp[k], refCount[k]);
    return { precision, recall, f1: f1Of(tp[k], predCount[k], refCount[k]), support: refCount[k] };
  });
  const n = labels.length;
  const mean = (key: 'precision' | 'recall' | 'f1') => (n === 0 ? zd : perClass.reduce((s, c) => s + c[key], 0) / n);
  let sumTp = 0;
  let sumPred = 0;
  let sumRef = 0;
  for (let k = 0; k < n; k++) {
    sumTp += tp[k];
    sumPred += predCount[k];
    sumRef += refCount[k];
  }
  const totalSupport = sumRef;
  const weightedMean = (key: 'precision' | 'recall' | 'f1') =>
    totalSupport === 0 ? zd : perClass.reduce((s, c) => s + c[key] * c.support, 0) / totalSupport;
  const microP = div(sumTp, sumPred);
  const microR = div(sumTp, sumRef);
  return {
    labels,
    perClass,
    macro: { precision: mean('precision'), recall: mean('recall'), f1: mean('f1') },
    micro: { precision: microP, recall: microR, f1: f1Of(sumTp, sumPred, sumRef) },
    weighted: { precision: weightedMean('precision'), recall: weightedMean('recall'), f1: weightedMean('f1') },
    accuracy: predictions.length === 0 ? 0 : accuracy(predictions, references),
  };
}

export interface ExactMatchOptions {
  /** Regular expressions whose matches are removed from both sides first. */
  regexesToIgnore?: (string | RegExp)[];
  ignoreCase?: boolean;
  /** Removes ASCII punctuation (Python's string.punctuation). */
  ignorePunctuation?: boolean;
  /** Removes the digits 0–9. */
  ignoreNumbers?: boolean;
  /** Trims surrounding whitespace first (default false, as `evaluate`). */
  trim?: boolean;
}

const PUNCT_RE = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g;

/** Fraction of predictions equal to their reference after the chosen normalization (HF evaluate's exact_match). */
export function exactMatch(predictions: string[], references: string[], opts: ExactMatchOptions = {}): number {
  checkPair(predictions, references);
  if (predictions.length === 0) return 0;
  const res = (opts.regexesToIgnore ?? []).map((r) => (typeof r === 'string' ? new RegExp(r, 'g') : new RegExp(r.source, r.flags.includes('g') ? r.flags : `${r.flags}g`)));
  const norm = (s: unknown, what: string): string => {
    if (typeof s !== 'string') throw metricError(`${what}: expected a string, got ${typeof s}`);
    let x = s;
    for (const re of res) x = x.replace(re, '');
    if (opts.trim) x = x.trim();
    if (opts.ignoreCase) x = x.toLowerCase();
    if (opts.ignorePunctuation) x = x.replace(PUNCT_RE, '');
    if (opts.ignoreNumbers) x = x.replace(/[0-9]/g, '');
    return x;
  };
  let ok = 0;
  for (let i = 0; i < predictions.length; i++) {
    if (norm(predictions[i], `predictions[${i}]`) === norm(references[i], `references[${i}]`)) ok++;
  }
  return ok / predictions.length;
}
