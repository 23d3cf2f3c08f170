// chrF and chrF++ with sacrebleu 2.6.0's numbers (CHRF metric: character n-grams without whitespace,
// optional word n-grams after its punctuation split, best reference by sentence F-score, corpus
// F-score from summed statistics with effective-order averaging or eps smoothing).
import { metricError } from './errors';
import { hasSurrogate, isPyWhitespace, pySplit } from './pytext';
import { checkReferenceStreams } from './bleu';
import { SACREBLEU_VERSION } from './sacrebleu_compat';
import { CountTable } from './count_table';

export interface ChrfOptions {
  /** Character n-gram order (default 6). */
  charOrder?: number;
  /** Word n-gram order (default 0; 2 gives chrF++). */
  wordOrder?: number;
  /** Recall weight (default 2). */
  beta?: number;
  lowercase?: boolean;
  /** Keep whitespace in character n-grams (default false). */
  whitespace?: boolean;
  /** chrF++.py-style eps smoothing instead of effective-order averaging (default false). */
  epsSmoothing?: boolean;
}

export interface ChrfScore {
  /** chrF on sacrebleu's 0–100 scale. */
  score: number;
  /** 'chrF2' or 'chrF2++' as sacrebleu names it. */
  name: string;
  /** Summed [hyp, ref, match] counts per order: char orders 1..charOrder, then word orders. */
  stats: number[];
  charOrder: number;
  wordOrder: number;
  beta: number;
  /** e.g. `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`. */
  signature: string;
}

interface Resolved {
  charOrder: number;
  wordOrder: number;
  beta: number;
  lowercase: boolean;
  whitespace: boolean;
  epsSmoothing: boolean;
}

function resolve(opts: ChrfOptions): Resolved {
  const r: Resolved = {
    charOrder: opts.charOrder ?? 6,
    wordOrder: opts.wordOrder ?? 0,
    beta: opts.beta ?? 2,
    lowercase: opts.lowercase ?? false,
    whitespace: opts.whitespace ?? false,
    epsSmoothing: opts.epsSmoothing ?? false,
  };
  if (!Number.isInteger(r.charOrder) || r.charOrder < 0) throw metricError(`chrF option charOrder: expected a non-negative integer, got ${r.charOrder}`);
  if (!Number.isInteger(r.wordOrder) || r.wordOrder < 0) throw metricError(`chrF option wordOrder: expected a non-negative integer, got ${r.wordOrder}`);
  if (r.charOrder + r.wordOrder === 0) throw metricError('chrF options charOrder + wordOrder must be at least 1');
  if (!Number.isFinite(r.beta) || r.beta < 0) throw metricError(`chrF option beta: expected a non-negative number, got ${r.beta}`);
  return r;
}

// string.punctuation, which chrF++ splits off a word's first or last character.
const PUNCT = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'.split(''));

/** sacrebleu's CHRF._remove_punctuation (splits '(hi)' into '(hi' and ')', as it does). */
function chrfWords(sent: string): string[] {
  const out: string[] = [];
  for (const w of pySplit(sent)) {
    // len(w) counts code points in Python; a lone astral code point is one character there.
    const len1 = w.length === 1 || (w.length === 2 && hasSurrogate(w) && Array.from(w).length === 1);
    if (len1) out.push(w);
    else if (PUNCT.has(w[w.length - 1])) out.push(w.slice(0, -1), w[w.length - 1]);
    else if (PUNCT.has(w[0])) out.push(w[0], w.slice(1));
    else out.push(w);
  }
  return out;
}

/** Keys of order n+1 n-grams are offsets[n] + [0, base^(n+1)); null when they would pass 2^52. */
function orderOffsets(base: number, maxOrder: number): number[] | null {
  const offsets = [0];
  for (let n = 1; n < maxOrder; n++) offsets.push(offsets[n - 1] + base ** n);
  return offsets[maxOrder - 1] + base ** maxOrder <= 2 ** 52 ? offsets : null;
}

const table = new CountTable();

/**
 * Appends per-order [hypCount, refCount, matchCount]. Matches are counted by walking the hypothesis
 * n-grams and consuming the reference counts: that equals sum(min(hypCount, refCount)). An n-gram
 * absent from the reference has no longer extension there. `sentinel` marks hypothesis symbols that
 * the reference lacks.
 */
function matchStats(hyp: Int32Array, sentinel: number, ref: Int32Array, base: number, maxOrder: number, into: number[]): void {
  const matches = new Array<number>(maxOrder).fill(0);
  const hypLen = hyp.length;
  const offsets = orderOffsets(base, maxOrder);
  if (offsets) {
    table.reset(ref.length * maxOrder);
    for (let i = 0; i < ref.length; i++) {
      let key = 0;
      for (let n = 0; n < maxOrder && i + n < ref.length; n++) {
        key = key * base + ref[i + n];
        table.increment(key + offsets[n]);
      }
    }
    for (let i = 0; i < hypLen; i++) {
      let key = 0;
      for (let n = 0; n < maxOrder && i + n < hypLen; n++) {
        const id = hyp[i + n];
        if (id === sentinel) break;
        key = key * base + id;
        const got = table.take(key + offsets[n]);
        if (got < 0) break;
        matches[n] += got;
      }
    }
  } else {
    // A segment with a very large alphabet: string keys.
    const counts = new Map<string, number>();
    for (let i = 0; i < ref.length; i++) {
      let key = '';
      for (let n = 0; n < maxOrder && i + n < ref.length; n++) {
        key += `${n ? ' ' : ''}${ref[i + n]}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }
    for (let i = 0; i < hypLen; i++) {
      let key = '';
      for (let n = 0; n < maxOrder && i + n < hypLen; n++) {
        const id = hyp[i + n];
        if (id === sentinel) break;
        key += `${n ? ' ' : ''}${id}`;
        const left = counts.get(key);
        if (left === undefined) break;
        if (left > 0) {
          matches[n]++;
          counts.set(key, left - 1);
        }
      }
    }
  }
  for (let n = 0; n < maxOrder; n++) {
    // sacrebleu: "Don't count hits if no reference exists for that n-gram" (an empty reference Counter).
    const refCount = Math.max(0, ref.length - n);
    into.push(refCount > 0 ? Math.max(0, hypLen - n) : 0, refCount, matches[n]);
  }
}

/** sacrebleu's CHRF._compute_f_score, same operation order. */
function fScore(stats: ArrayLike<number>, order: number, beta: number, epsSmoothing: boolean): number {
  const eps = 1e-16;
  let score = 0.0;
  let effectiveOrder = 0;
  const factor = beta ** 2;
  let avgPrec = 0.0;
  let avgRec = 0.0;
  for (let i = 0; i < order; i++) {
    const nHyp = stats[3 * i];
    const nRef = stats[3 * i + 1];
    const nMatch = stats[3 * i + 2];
    const prec = nHyp > 0 ? nMatch / nHyp : eps;
    const rec = nRef > 0 ? nMatch / nRef : eps;
    const denom = factor * prec + rec;
    score += denom > 0 ? ((1 + factor) * prec * rec) / denom : eps;
    if (nHyp > 0 && nRef > 0) {
      avgPrec += prec;
      avgRec += rec;
      effectiveOrder += 1;
    }
  }
  if (epsSmoothing) return (100 * score) / order;
  if (effectiveOrder === 0) {
    avgPrec = avgRec = 0.0;
  } else {
    avgPrec /= effectiveOrder;
    avgRec /= effectiveOrder;
  }
  if (avgPrec + avgRec) {
    score = (1 + factor) * avgPrec * avgRec;
    score /= factor * avgPrec + avgRec;
    return 100 * score;
  }
  return 0.0;
}

/**
 * Segment-local character ids. BMP code units map through a stamped table (no allocation per
 * segment); astral code points (surrogate pairs, one character for Python) through a Map.
 */
class CharVocab {
  private readonly stamp = new Int32Array(65536);
  private readonly local = new Int32Array(65536);
  private epoch = 0;
  private astral = new Map<string, number>();
  size = 0;

  reset(): void {
    if (++this.epoch === 0x3fffffff) {
      this.stamp.fill(0);
      this.epoch = 1;
    }
    this.astral.clear();
    this.size = 0;
  }

  /** Ids of s's characters (whitespace dropped unless kept); unseen ones get -1 when frozen. */
  ids(s: string, keepWhitespace: boolean, frozen: boolean): Int32Array {
    const out = new Int32Array(s.length);
    let m = 0;
    const n = s.length;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (!keepWhitespace && isPyWhitespace(c)) continue;
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          out[m++] = lookup(this.astral, s.slice(i, i + 2), frozen, this);
          i++;
          continue;
        }
      }
      if (this.stamp[c] === this.epoch) out[m++] = this.local[c];
      else if (frozen) out[m++] = -1;
      else {
        this.stamp[c] = this.epoch;
        this.local[c] = this.size;
        out[m++] = this.size++;
      }
    }
    return out.subarray(0, m);
  }
}

function lookup(vocab: Map<string, number>, x: string, frozen: boolean, counter: { size: number }): number {
  let id = vocab.get(x);
  if (id === undefined) {
    if (frozen) return -1;
    id = counter.size++;
    vocab.set(x, id);
  }
  return id;
}

/** Hypothesis ids with every unseen symbol (-1) mapped to the sentinel. */
function withSentinel(ids: ArrayLike<number>, sentinel: number): Int32Array {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) out[i] = ids[i] < 0 ? sentinel : ids[i];
  return out;
}

const charVocab = new CharVocab();

function segmentStats(hyp: string, refs: string[], r: Resolved): number[] {
  charVocab.reset();
  const refChars = refs.map((ref) => charVocab.ids(ref, r.whitespace, false));
  const hypChars = withSentinel(charVocab.ids(hyp, r.whitespace, true), charVocab.size);
  const charBase = charVocab.size + 1;
  let refWords: Int32Array[] = [];
  let hypWords: Int32Array = new Int32Array(0);
  let wordBase = 1;
  if (r.wordOrder > 0) {
    const wordVocab = new Map<string, number>();
    const counter = { size: 0 };
    refWords = refs.map((ref) => Int32Array.from(chrfWords(ref), (w) => lookup(wordVocab, w, false, counter)));
    hypWords = withSentinel(chrfWords(hyp).map((w) => lookup(wordVocab, w, true, counter)), counter.size);
    wordBase = counter.size + 1;
  }
  let best: number[] = [];
  let bestF = -1.0;
  const order = r.charOrder + r.wordOrder;
  for (let k = 0; k < refs.length; k++) {
    const stats: number[] = [];
    matchStats(hypChars, charBase - 1, refChars[k], charBase, r.charOrder, stats);
    if (r.wordOrder > 0) matchStats(hypWords, wordBase - 1, refWords[k], wordBase, r.wordOrder, stats);
    const f = fScore(stats, order, r.beta, r.epsSmoothing);
    if (f > bestF) {
      bestF = f;
      best = stats;
    }
  }
  return best;
}

function signatureOf(r: Resolved, nrefs: number | 'var'): string {
  return `nrefs:${nrefs}|case:${r.lowercase ? 'lc' : 'mixed'}|eff:${r.epsSmoothing ? 'no' : 'yes'}|nc:${r.charOrder}|nw:${r.wordOrder}|space:${r.whitespace ? 'yes' : 'no'}|version:${SACREBLEU_VERSION}`;
}

function chrfFromSegments(hypotheses: string[], references: (string | null | undefined)[][], r: Resolved, nrefs: number | 'var'): ChrfScore {
  const order = r.charOrder + r.wordOrder;
  const total = new Array<number>(3 * order).fill(0);
  const refs: string[] = [];
  for (let i = 0; i < hypotheses.length; i++) {
    refs.length = 0;
    for (const stream of references) {
      const x = stream[i];
      if (x !== null && x !== undefined) refs.push(r.lowercase ? x.toLowerCase() : x);
    }
    const hyp = r.lowercase ? hypotheses[i].toLowerCase() : hypotheses[i];
    const s = segmentStats(hyp, refs, r);
    for (let j = 0; j < s.length; j++) total[j] += s[j];
  }
  return {
    score: fScore(total, order, r.beta, r.epsSmoothing),
    name: `chrF${r.beta}${'+'.repeat(r.wordOrder)}`,
    stats: total,
    charOrder: r.charOrder,
    wordOrder: r.wordOrder,
    beta: r.beta,
    signature: signatureOf(r, nrefs),
  };
}

/** Corpus chrF (chrF2 by default; `{ wordOrder: 2 }` gives chrF++) as `sacrebleu.corpus_chrf` computes it. */
export function corpusChrf(hypotheses: string[], references: (string | null | undefined)[][], opts: ChrfOptions = {}): ChrfScore {
  if (!Array.isArray(hypotheses)) throw metricError('hypotheses: expected an array of strings');
  hypotheses.forEach((h, i) => {
    if (typeof h !== 'string') throw metricError(`hypotheses[${i}]: expected a string, got ${typeof h}`);
  });
  const nrefs = checkReferenceStreams(references, hypotheses.length);
  return chrfFromSegments(hypotheses, references, resolve(opts), nrefs);
}

/** Sentence chrF as `sacrebleu.sentence_chrf(hypothesis, references)` computes it. */
export function sentenceChrf(hypothesis: string, references: string[], opts: ChrfOptions = {}): ChrfScore {
  if (typeof hypothesis !== 'string') throw metricError(`hypothesis: expected a string, got ${typeof hypothesis}`);
  if (!Array.isArray(references) || references.length === 0) throw metricError('references: expected a non-empty array of strings');
  references.forEach((x, i) => {
    if (typeof x !== 'string') throw metricError(`references[${i}]: expected a string, got ${typeof x}`);
  });
  return chrfFromSegments([hypothesis], references.map((x) => [x]), resolve(opts), references.length);
}
