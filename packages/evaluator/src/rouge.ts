// ROUGE-N, ROUGE-L and ROUGE-Lsum with rouge-score's algorithm (google-research/rouge, as
// torchmetrics 1.9.0 and HF `evaluate` run it): its tokenizer (lowercase, non-[a-z0-9] → space,
// NLTK Porter stems for tokens longer than 3 characters when asked), its n-gram clipping, its LCS
// table and backtracking, its summary-level union-LCS for rougeLsum, and the best reference by F.
import { metricError } from './errors';
import { cachedPorterStemmer } from './porter';

export type RougeType = 'rouge1' | 'rouge2' | 'rouge3' | 'rouge4' | 'rouge5' | 'rouge6' | 'rouge7' | 'rouge8' | 'rouge9' | 'rougeL' | 'rougeLsum';

export interface RougeOptions {
  /** Default ['rouge1', 'rouge2', 'rougeL', 'rougeLsum']. */
  rougeTypes?: RougeType[];
  /** Stem tokens longer than 3 characters with NLTK's Porter stemmer (default false). */
  useStemmer?: boolean;
  /**
   * With several references for a prediction: 'best' keeps the reference with the highest F per
   * ROUGE type (rouge-score's score_multi, torchmetrics' default), 'avg' averages over references.
   */
  accumulate?: 'best' | 'avg';
  /**
   * How rougeLsum finds sentences: by default on newlines, empty lines dropped (rouge-score).
   * torchmetrics splits with NLTK's punkt instead; pass a splitter to reproduce that.
   */
  splitSentences?: (text: string) => string[];
}

export interface RougeFigure {
  precision: number;
  recall: number;
  fmeasure: number;
}

export type RougeScores = Partial<Record<RougeType, RougeFigure>>;

export interface RougeResult {
  perExample: RougeScores[];
  /** Mean over examples of each figure (what torchmetrics' ROUGEScore and `evaluate` report). */
  mean: RougeScores;
}

const VALID = /^rouge([1-9]|L|Lsum)$/;

// The default tokenizer as a scanner: lowercase, every run of characters outside [a-z0-9] separates.
// Lowercasing first matters: 'İ'.toLowerCase() is 'i̇' and the Kelvin sign becomes 'k', as in Python.
const ALNUM = new Uint8Array(128);
for (let c = 48; c <= 57; c++) ALNUM[c] = 1;
for (let c = 97; c <= 122; c++) ALNUM[c] = 1;

export function rougeTokenize(text: string, stem?: (w: string) => string): string[] {
  const s = text.toLowerCase();
  const out: string[] = [];
  const n = s.length;
  let i = 0;
  while (i < n) {
    while (i < n && !isAlnum(s.charCodeAt(i))) i++;
    if (i >= n) break;
    const start = i;
    while (i < n && isAlnum(s.charCodeAt(i))) i++;
    const tok = s.slice(start, i);
    out.push(stem && tok.length > 3 ? stem(tok) : tok);
  }
  return out;
}

function isAlnum(c: number): boolean {
  return c < 128 && ALNUM[c] === 1;
}

/** Interned token ids, so n-grams and LCS compare integers. */
class Interner {
  private readonly ids = new Map<string, number>();
  idsOf(tokens: string[]): Int32Array {
    const out = new Int32Array(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      let id = this.ids.get(tokens[i]);
      if (id === undefined) {
        id = this.ids.size;
        this.ids.set(tokens[i], id);
      }
      out[i] = id;
    }
    return out;
  }
  get size(): number {
    return this.ids.size;
  }
}

function fmeasure(precision: number, recall: number): number {
  return precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
}

function figure(hits: number, predCount: number, targetCount: number): RougeFigure {
  const precision = hits / Math.max(predCount, 1);
  const recall = hits / Math.max(targetCount, 1);
  return { precision, recall, fmeasure: fmeasure(precision, recall) };
}

const ZERO: RougeFigure = Object.freeze({ precision: 0, recall: 0, fmeasure: 0 });

function rougeN(target: Int32Array, pred: Int32Array, n: number, vocab: number): RougeFigure {
  const tCount = Math.max(0, target.length - n + 1);
  const pCount = Math.max(0, pred.length - n + 1);
  if (tCount === 0 || pCount === 0) return figure(0, pCount, tCount);
  const base = vocab + 1;
  const numeric = base ** n <= 2 ** 53;
  const counts = new Map<number | string, number>();
  const key = (ids: Int32Array, i: number): number | string => {
    if (numeric) {
      let k = 0;
      for (let j = 0; j < n; j++) k = k * base + ids[i + j];
      return k;
    }
    return Array.prototype.join.call(ids.subarray(i, i + n), ' ');
  };
  for (let i = 0; i < tCount; i++) {
    const k = key(target, i);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  let hits = 0;
  for (let i = 0; i < pCount; i++) {
    const k = key(pred, i);
    const left = counts.get(k);
    if (left !== undefined && left > 0) {
      hits++;
      counts.set(k, left - 1);
    }
  }
  return figure(hits, pCount, tCount);
}

/** LCS length with one rolling row. */
function lcsLength(a: Int32Array, b: Int32Array): number {
  const cols = b.length;
  let prev = new Int32Array(cols + 1);
  let cur = new Int32Array(cols + 1);
  for (let i = 1; i <= a.length; i++) {
    const ai = a[i - 1];
    for (let j = 1; j <= cols; j++) {
      if (ai === b[j - 1]) cur[j] = prev[j - 1] + 1;
      else cur[j] = prev[j] >= cur[j - 1] ? prev[j] : cur[j - 1];
    }
    const t = prev;
    prev = cur;
    cur = t;
  }
  return prev[cols];
}

function rougeL(target: Int32Array, pred: Int32Array): RougeFigure {
  if (target.length === 0 || pred.length === 0) return ZERO;
  const lcs = lcsLength(target, pred);
  return { precision: lcs / pred.length, recall: lcs / target.length, fmeasure: fmeasure(lcs / pred.length, lcs / target.length) };
}

/**
 * Indices into `ref` of one LCS with `can`, read out of the full table as rouge-score's
 * _backtrack_norec does (on a tie it steps back in `ref`).
 */
function lcsIndices(ref: Int32Array, can: Int32Array): number[] {
  const rows = ref.length;
  const cols = can.length;
  const w = cols + 1;
  const t = new Int32Array((rows + 1) * w);
  for (let i = 1; i <= rows; i++) {
    const ri = ref[i - 1];
    for (let j = 1; j <= cols; j++) {
      if (ri === can[j - 1]) t[i * w + j] = t[(i - 1) * w + j - 1] + 1;
      else {
        const up = t[(i - 1) * w + j];
        const left = t[i * w + j - 1];
        t[i * w + j] = up >= left ? up : left;
      }
    }
  }
  const out: number[] = [];
  let i = rows;
  let j = cols;
  while (i > 0 && j > 0) {
    if (ref[i - 1] === can[j - 1]) {
      out.push(i - 1);
      i--;
      j--;
    } else if (t[i * w + j - 1] > t[(i - 1) * w + j]) j--;
    else i--;
  }
  return out.reverse();
}

/** Summary-level LCS (rouge-score's _summary_level_lcs), with its guard against double counting. */
function rougeLsum(targetSents: Int32Array[], predSents: Int32Array[], vocab: number): RougeFigure {
  if (targetSents.length === 0 || predSents.length === 0) return ZERO;
  let m = 0;
  let n = 0;
  for (const s of targetSents) m += s.length;
  for (const s of predSents) n += s.length;
  if (m === 0 || n === 0) return ZERO;
  const cntT = new Int32Array(vocab);
  const cntP = new Int32Array(vocab);
  for (const s of targetSents) for (const id of s) cntT[id]++;
  for (const s of predSents) for (const id of s) cntP[id]++;
  let hits = 0;
  for (const r of targetSents) {
    const union = new Set<number>();
    for (const c of predSents) for (const idx of lcsIndices(r, c)) union.add(idx);
    const sorted = [...union].sort((a, b) => a - b);
    for (const idx of sorted) {
      const tok = r[idx];
      if (cntP[tok] > 0 && cntT[tok] > 0) {
        hits++;
        cntP[tok]--;
        cntT[tok]--;
      }
    }
  }
  const recall = hits / m;
  const precision = hits / n;
  return { precision, recall, fmeasure: fmeasure(precision, recall) };
}

function defaultSentences(text: string): string[] {
  return text.split('\n').filter((s) => s.length > 0);
}

/** Scores one prediction against one reference: rouge-score's RougeScorer.score(target, prediction). */
function scorePair(
  target: string,
  prediction: string,
  types: RougeType[],
  stem: ((w: string) => string) | undefined,
  split: (text: string) => string[],
): RougeScores {
  const interner = new Interner();
  const t = interner.idsOf(rougeTokenize(target, stem));
  const p = interner.idsOf(rougeTokenize(prediction, stem));
  let tSents: Int32Array[] | undefined;
  let pSents: Int32Array[] | undefined;
  if (types.includes('rougeLsum')) {
    tSents = split(target).map((s) => interner.idsOf(rougeTokenize(s, stem)));
    pSents = split(prediction).map((s) => interner.idsOf(rougeTokenize(s, stem)));
  }
  const out: RougeScores = {};
  for (const type of types) {
    if (type === 'rougeL') out[type] = rougeL(t, p);
    else if (type === 'rougeLsum') out[type] = rougeLsum(tSents!, pSents!, interner.size);
    else out[type] = rougeN(t, p, Number(type.slice(5)), interner.size);
  }
  return out;
}

/**
 * ROUGE of each prediction against its reference(s) and the mean over examples.
 * `references[i]` is a string or an array of strings (several references for prediction i).
 */
export function rougeScore(predictions: string[], references: (string | string[])[], opts: RougeOptions = {}): RougeResult {
  if (!Array.isArray(predictions)) throw metricError('predictions: expected an array of strings');
  if (!Array.isArray(references)) throw metricError('references: expected an array of strings or string arrays');
  if (predictions.length !== references.length) {
    throw metricError(`references: has ${references.length} entries but there are ${predictions.length} predictions`);
  }
  const types = opts.rougeTypes ?? ['rouge1', 'rouge2', 'rougeL', 'rougeLsum'];
  if (!Array.isArray(types) || types.length === 0) throw metricError('rougeTypes: expected a non-empty array');
  for (const t of types) {
    if (typeof t !== 'string' || !VALID.test(t)) {
      throw metricError(`rougeTypes: unknown ROUGE type ${JSON.stringify(t)}; expected rouge1 … rouge9, rougeL or rougeLsum`);
    }
  }
  const accumulate = opts.accumulate ?? 'best';
  if (accumulate !== 'best' && accumulate !== 'avg') throw metricError(`accumulate: expected 'best' or 'avg', got ${JSON.stringify(accumulate)}`);
  const stem = opts.useStemmer ? cachedPorterStemmer() : undefined;
  const split = opts.splitSentences ?? defaultSentences;

  const perExample: RougeScores[] = [];
  for (let i = 0; i < predictions.length; i++) {
    const pred = predictions[i];
    if (typeof pred !== 'string') throw metricError(`predictions[${i}]: expected a string, got ${typeof pred}`);
    const refs = typeof references[i] === 'string' ? [references[i] as string] : references[i];
    if (!Array.isArray(refs) || refs.length === 0) throw metricError(`references[${i}]: expected a string or a non-empty array of strings`);
    const scored = refs.map((r, k) => {
      if (typeof r !== 'string') throw metricError(`references[${i}][${k}]: expected a string, got ${typeof r}`);
      return scorePair(r, pred, types, stem, split);
    });
    if (scored.length === 1) {
      perExample.push(scored[0]);
      continue;
    }
    const combined: RougeScores = {};
    for (const type of types) {
      if (accumulate === 'best') {
        let best = scored[0][type]!;
        for (const s of scored) if (s[type]!.fmeasure > best.fmeasure) best = s[type]!;
        combined[type] = best;
      } else {
        const f = { precision: 0, recall: 0, fmeasure: 0 };
        for (const s of scored) {
          f.precision += s[type]!.precision;
          f.recall += s[type]!.recall;
          f.fmeasure += s[type]!.fmeasure;
        }
        combined[type] = { precision: f.precision / scored.length, recall: f.recall / scored.length, fmeasure: f.fmeasure / scored.length };
      }
    }
    perExample.push(combined);
  }

  const mean: RougeScores = {};
  for (const type of types) {
    const m = { precision: 0, recall: 0, fmeasure: 0 };
    for (const e of perExample) {
      m.precision += e[type]!.precision;
      m.recall += e[type]!.recall;
      m.fmeasure += e[type]!.fmeasure;
    }
    const k = perExample.length || 1;
    mean[type] = perExample.length ? { precision: m.precision / k, recall: m.recall / k, fmeasure: m.fmeasure / k } : { ...ZERO };
  }
  return { perExample, mean };
}
