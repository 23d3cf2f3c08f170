// chrF and chrF++ with sacrebleu 2.6.0's numbers (CHRF metric: character n-grams without whitespace,
// optional word n-grams after its punctuation split, best reference by sentence F-score, corpus
// F-score from summed statistics with effective-order averaging or eps smoothing).
import { metricError } from './errors';
import { hasSurrogate, isPyWhitespace, pySplit } from './pytext';
import { checkReferenceStreams } from './bleu';
import { SACREBLEU_VERSION } from './sacrebleu_compat';

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

/** Reference n-gram counts of one id sequence, one Map per order 1..maxOrder. */
type Counts = Map<number | string, number>[];

function ngramCounts(ids: Int32Array, maxOrder: number, base: number): Counts {
  const numeric = base ** maxOrder <= 2 ** 53;
  const out: Counts = [];
  for (let n = 0; n < maxOrder; n++) out.push(new Map());
  for (let i = 0; i < ids.length; i++) {
    let key: number | string = numeric ? 0 : '';
    for (let n = 0; n < maxOrder && i + n < ids.length; n++) {
      key = numeric ? (key as number) * base + ids[i + n] : `${key as string}${n ? ' ' : ''}${ids[i + n]}`;
      const m = out[n];
      m.set(key, (m.get(key) ?? 0) + 1);
    }
  }
  return out;
}

/**
 * Appends per-order [hypCount, refCount, matchCount]. Matches are counted by walking the hypothesis
 * n-grams and consuming the reference counts (which `ref` may be mutated for): that equals
 * sum(min(hypCount, refCount)). An n-gram absent from the reference has no longer extension there.
 */
function matchStats(hyp: Int32Array, sentinel: number, ref: Counts, refLen: number, base: number, maxOrder: number, into: number[]): void {
  const numeric = base ** maxOrder <= 2 ** 53;
  const matches = new Array<number>(maxOrder).fill(0);
  const hypLen = hyp.length;
  for (let i = 0; i < hypLen; i++) {
    let key: number | string = numeric ? 0 : '';
    for (let n = 0; n < maxOrder && i + n < hypLen; n++) {
      const id = hyp[i + n];
      if (id === sentinel) break;
      key = numeric ? (key as number) * base + id : `${key as string}${n ? ' ' : ''}${id}`;
      const m = ref[n];
      const left = m.get(key);
      if (left === undefined) break;
      if (left > 0) {
        matches[n]++;
        m.set(key, left - 1);
      }
    }
  }
  for (let n = 0; n < maxOrder; n++) {
    // sacrebleu: "Don't count hits if no reference exists for that n-gram" (an empty reference Counter).
    const refCount = Math.max(0, refLen - n);
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

/** Character ids of a segment (code points; whitespace dropped unless kept); unseen ones get -1 when frozen. */
function charIds(s: string, keepWhitespace: boolean, vocab: Map<string, number>, frozen: boolean): number[] {
  const ids: number[] = [];
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (!keepWhitespace && isPyWhitespace(c)) continue;
    let ch = s[i];
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        ch = s.slice(i, i + 2);
        i++;
      }
    }
    ids.push(lookup(vocab, ch, frozen));
  }
  return ids;
}

function lookup(vocab: Map<string, number>, x: string, frozen: boolean): number {
  let id = vocab.get(x);
  if (id === undefined) {
    if (frozen) return -1;
    id = vocab.size;
    vocab.set(x, id);
  }
  return id;
}

/** Hypothesis ids with every unseen symbol mapped to the sentinel `vocab.size`. */
function withSentinel(ids: number[], sentinel: number): Int32Array {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) out[i] = ids[i] < 0 ? sentinel : ids[i];
  return out;
}

function segmentStats(hyp: string, refs: string[], r: Resolved): number[] {
  const charVocab = new Map<string, number>();
  const refChars = refs.map((ref) => charIds(ref, r.whitespace, charVocab, false));
  const hypChars = withSentinel(charIds(hyp, r.whitespace, charVocab, true), charVocab.size);
  const charBase = charVocab.size + 1;
  let refWords: number[][] = [];
  let hypWords: Int32Array = new Int32Array(0);
  let wordBase = 1;
  if (r.wordOrder > 0) {
    const wordVocab = new Map<string, number>();
    refWords = refs.map((ref) => chrfWords(ref).map((w) => lookup(wordVocab, w, false)));
    hypWords = withSentinel(chrfWords(hyp).map((w) => lookup(wordVocab, w, true)), wordVocab.size);
    wordBase = wordVocab.size + 1;
  }
  let best: number[] = [];
  let bestF = -1.0;
  const order = r.charOrder + r.wordOrder;
  for (let k = 0; k < refs.length; k++) {
    const stats: number[] = [];
    const rc = Int32Array.from(refChars[k]);
    matchStats(hypChars, charBase - 1, ngramCounts(rc, r.charOrder, charBase), rc.length, charBase, r.charOrder, stats);
    if (r.wordOrder > 0) {
      const rw = Int32Array.from(refWords[k]);
      matchStats(hypWords, wordBase - 1, ngramCounts(rw, r.wordOrder, wordBase), rw.length, wordBase, r.wordOrder, stats);
    }
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
