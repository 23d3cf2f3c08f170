// Corpus and sentence BLEU with sacrebleu 2.6.0's numbers: same tokenizers, same n-gram clipping
// against the per-n-gram maximum over references, the closest reference length (shorter on ties),
// the same smoothing and the same floating-point operation order.
import { metricError } from './errors';
import { pyRstrip } from './pytext';
import { BLEU_TOKENIZERS, tokenize13aRanges, type BleuTokenizerName } from './tokenizers';
import { RangeInterner } from './intern';
import { pySum, SACREBLEU_VERSION } from './sacrebleu_compat';
import { CountTable } from './count_table';

export type SmoothMethod = 'exp' | 'floor' | 'add-k' | 'none';

export interface BleuOptions {
  /** '13a' (default), 'intl', 'char' or 'none'. */
  tokenize?: BleuTokenizerName;
  /** Lowercase hypotheses and references first (sacrebleu's `lowercase`). */
  lowercase?: boolean;
  /** 'exp' (default for both corpus and sentence BLEU), 'floor', 'add-k' or 'none'. */
  smoothMethod?: SmoothMethod;
  /** The value for 'floor' (default 0.1) and 'add-k' (default 1). */
  smoothValue?: number;
  /** Leave out n-gram orders with no hypothesis n-grams (default false; true for sentenceBleu). */
  effectiveOrder?: boolean;
  /** Maximum n-gram order (default 4). */
  maxNgramOrder?: number;
}

export interface BleuScore {
  /** BLEU on sacrebleu's 0–100 scale. */
  score: number;
  /** Clipped matching n-grams per order (with 'add-k', the smoothed counts, as sacrebleu reports). */
  counts: number[];
  /** Hypothesis n-grams per order. */
  totals: number[];
  /** Per-order precisions, 0–100. */
  precisions: number[];
  /** Brevity penalty. */
  bp: number;
  sysLen: number;
  refLen: number;
  /** sacrebleu's reproducibility signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`. */
  signature: string;
}

const SMOOTH_DEFAULTS: Record<SmoothMethod, number | null> = { none: null, floor: 0.1, 'add-k': 1, exp: null };

interface ResolvedBleuOptions {
  tokenize: BleuTokenizerName;
  lowercase: boolean;
  smoothMethod: SmoothMethod;
  smoothValue: number | undefined;
  effectiveOrder: boolean;
  maxNgramOrder: number;
}

function resolveOptions(opts: BleuOptions, effectiveOrderDefault: boolean): ResolvedBleuOptions {
  const tokenize = opts.tokenize ?? '13a';
  if (!(tokenize in BLEU_TOKENIZERS)) {
    throw metricError(`BLEU option tokenize: expected '13a', 'intl', 'char' or 'none', got ${JSON.stringify(tokenize)}`);
  }
  const smoothMethod = opts.smoothMethod ?? 'exp';
  if (!(smoothMethod in SMOOTH_DEFAULTS)) {
    throw metricError(`BLEU option smoothMethod: expected 'exp', 'floor', 'add-k' or 'none', got ${JSON.stringify(smoothMethod)}`);
  }
  const maxNgramOrder = opts.maxNgramOrder ?? 4;
  if (!Number.isInteger(maxNgramOrder) || maxNgramOrder < 1) {
    throw metricError(`BLEU option maxNgramOrder: expected a positive integer, got ${maxNgramOrder}`);
  }
  if (opts.smoothValue !== undefined && !Number.isFinite(opts.smoothValue)) {
    throw metricError(`BLEU option smoothValue: expected a finite number, got ${opts.smoothValue}`);
  }
  return {
    tokenize,
    lowercase: opts.lowercase ?? false,
    smoothMethod,
    smoothValue: opts.smoothValue,
    effectiveOrder: opts.effectiveOrder ?? effectiveOrderDefault,
    maxNgramOrder,
  };
}

/** Python's `f'{x:.2f}'` for the smoothing values a signature shows. */
function fixed2(x: number): string {
  return x.toFixed(2);
}

function signatureOf(o: ResolvedBleuOptions, nrefs: number | 'var'): string {
  let smooth: string = o.smoothMethod;
  const def = SMOOTH_DEFAULTS[o.smoothMethod];
  if (def !== null) smooth += `[${fixed2(o.smoothValue ?? def)}]`;
  return `nrefs:${nrefs}|case:${o.lowercase ? 'lc' : 'mixed'}|eff:${o.effectiveOrder ? 'yes' : 'no'}|tok:${o.tokenize}|smooth:${smooth}|version:${SACREBLEU_VERSION}`;
}

// Numeric n-gram keys over a segment-local vocabulary stay exact while Σ base^n ≤ 2^53.
const MAX_SAFE = 2 ** 52;

/**
 * Corpus-wide state: token ids (interned from character ranges for 13a, from strings otherwise),
 * segment-local ids, and the reference n-gram tables.
 */
class BleuCounter {
  private readonly intern = new RangeInterner();
  private localOf = new Int32Array(64);
  private stampOf = new Int32Array(64);
  private segment = 0;
  private readonly refTable = new CountTable();
  private readonly oneRef = new CountTable();

  constructor(
    private readonly order: number,
    private readonly tokenize: BleuTokenizerName,
    private readonly lowercase: boolean,
  ) {}

  /** Global ids of a segment's tokens; with `insert` false, unseen tokens get -1. */
  ids(segment: string, insert: boolean): Int32Array {
    let s = pyRstrip(this.lowercase ? segment.toLowerCase() : segment);
    const it = this.intern;
    if (this.tokenize === '13a') {
      const r = tokenize13aRanges(s);
      s = r.text;
      const out = new Int32Array(r.count);
      for (let k = 0; k < r.count; k++) out[k] = insert ? it.id(s, r.ranges[2 * k], r.ranges[2 * k + 1]) : it.find(s, r.ranges[2 * k], r.ranges[2 * k + 1]);
      if (insert) this.fit();
      return out;
    }
    const toks = BLEU_TOKENIZERS[this.tokenize](s);
    const out = new Int32Array(toks.length);
    for (let k = 0; k < toks.length; k++) out[k] = insert ? it.id(toks[k], 0, toks[k].length) : it.find(toks[k], 0, toks[k].length);
    if (insert) this.fit();
    return out;
  }

  private fit(): void {
    if (this.intern.size <= this.localOf.length) return;
    let n = this.localOf.length;
    while (n < this.intern.size) n *= 2;
    const a = new Int32Array(n);
    a.set(this.localOf);
    this.localOf = a;
    const b = new Int32Array(n);
    b.set(this.stampOf);
    this.stampOf = b;
  }

  /**
   * Adds one segment's statistics to `stats` = [sysLen, refLen, correct_1..N, total_1..N].
   * Reference tokens get ids 0..B-1 in this segment; a hypothesis token that no reference has can
   * never match, so any n-gram through it is skipped. Clipping walks the hypothesis n-grams in order
   * and consumes the reference's (max over references) count, which equals min(hypCount, refCount).
   */
  add(hypGlobal: Int32Array, refsGlobal: Int32Array[], stats: Float64Array): void {
    const order = this.order;
    const seg = ++this.segment;
    let vocab = 0;
    let refNgrams = 0;
    const refIds: Int32Array[] = [];
    for (const ref of refsGlobal) {
      const ids = new Int32Array(ref.length);
      for (let i = 0; i < ref.length; i++) {
        const g = ref[i];
        if (this.stampOf[g] !== seg) {
          this.stampOf[g] = seg;
          this.localOf[g] = vocab++;
        }
        ids[i] = this.localOf[g];
      }
      refIds.push(ids);
      refNgrams += ref.length * order;
    }

    // Closest reference length; the shorter one on ties.
    const hypLen = hypGlobal.length;
    let closestDiff = -1;
    let closestLen = -1;
    for (const ref of refsGlobal) {
      const diff = Math.abs(hypLen - ref.length);
      if (closestDiff === -1 || diff < closestDiff) {
        closestDiff = diff;
        closestLen = ref.length;
      } else if (diff === closestDiff && ref.length < closestLen) {
        closestLen = ref.length;
      }
    }
    stats[0] += hypLen;
    stats[1] += closestLen;
    for (let n = 1; n <= order; n++) stats[1 + order + n] += Math.max(0, hypLen - n + 1);
    if (vocab === 0 || hypLen === 0) return;

    const hypIds = new Int32Array(hypLen);
    for (let i = 0; i < hypLen; i++) {
      const g = hypGlobal[i];
      hypIds[i] = g >= 0 && this.stampOf[g] === seg ? this.localOf[g] : -1;
    }

    const base = vocab;
    // offsets[n] separates the key ranges of the orders: order n+1 keys are offsets[n] + [0, base^(n+1)).
    const offsets: number[] = [0];
    for (let n = 1; n < order; n++) offsets.push(offsets[n - 1] + base ** n);
    if (offsets[order - 1] + base ** order > MAX_SAFE) {
      addSegmentStringKeys(hypIds, refIds, order, stats);
      return;
    }
    const table = this.refTable;
    table.reset(refNgrams);
    if (refIds.length === 1) {
      countNgrams(refIds[0], order, base, offsets, table);
    } else {
      for (const ids of refIds) {
        const one = this.oneRef;
        one.reset(ids.length * order);
        countNgrams(ids, order, base, offsets, one);
        one.forEach((k, c) => table.max(k, c));
      }
    }
    for (let i = 0; i < hypLen; i++) {
      let key = 0;
      for (let n = 0; n < order && i + n < hypLen; n++) {
        const id = hypIds[i + n];
        if (id < 0) break;
        key = key * base + id;
        const got = table.take(key + offsets[n]);
        if (got < 0) break; // no reference n-gram extends this prefix either
        stats[2 + n] += got;
      }
    }
  }
}

function countNgrams(ids: Int32Array, order: number, base: number, offsets: number[], into: CountTable): void {
  for (let i = 0; i < ids.length; i++) {
    let key = 0;
    for (let n = 0; n < order && i + n < ids.length; n++) {
      key = key * base + ids[i + n];
      into.increment(key + offsets[n]);
    }
  }
}

/** Segments whose vocabulary is too large for numeric keys: string keys of local ids. */
function addSegmentStringKeys(hypIds: Int32Array, refIds: Int32Array[], order: number, stats: Float64Array): void {
  const refCounts = new Map<string, number>();
  for (const ref of refIds) {
    const local = new Map<string, number>();
    for (let i = 0; i < ref.length; i++) {
      let key = '';
      for (let n = 0; n < order && i + n < ref.length; n++) {
        key += `${n ? ' ' : ''}${ref[i + n]}`;
        local.set(key, (local.get(key) ?? 0) + 1);
      }
    }
    for (const [k, c] of local) {
      const prev = refCounts.get(k);
      if (prev === undefined || c > prev) refCounts.set(k, c);
    }
  }
  for (let i = 0; i < hypIds.length; i++) {
    let key = '';
    for (let n = 0; n < order && i + n < hypIds.length; n++) {
      const id = hypIds[i + n];
      if (id < 0) break;
      key += `${n ? ' ' : ''}${id}`;
      const left = refCounts.get(key);
      if (left === undefined) break;
      if (left > 0) {
        stats[2 + n] += 1;
        refCounts.set(key, left - 1);
      }
    }
  }
}

function myLog(x: number): number {
  return x === 0 ? -9999999999 : Math.log(x);
}

/** sacrebleu's BLEU.compute_bleu on summed statistics, with the same operation order. */
export function computeBleu(
  correct: number[],
  total: number[],
  sysLen: number,
  refLen: number,
  opts: { smoothMethod?: SmoothMethod; smoothValue?: number; effectiveOrder?: boolean; maxNgramOrder?: number } = {},
): Omit<BleuScore, 'signature'> {
  const smoothMethod = opts.smoothMethod ?? 'none';
  const order = opts.maxNgramOrder ?? 4;
  const smoothValue = opts.smoothValue ?? SMOOTH_DEFAULTS[smoothMethod] ?? 0;
  let bp = 1.0;
  if (sysLen < refLen) bp = sysLen > 0 ? Math.exp(1 - refLen / sysLen) : 0.0;
  const precisions = new Array<number>(order).fill(0);
  if (!correct.some((c) => c !== 0)) {
    return { score: 0.0, counts: correct, totals: total, precisions, bp, sysLen, refLen };
  }
  let smoothMteval = 1.0;
  let effOrder = order;
  for (let n = 1; n <= order; n++) {
    if (smoothMethod === 'add-k' && n > 1) {
      correct[n - 1] += smoothValue;
      total[n - 1] += smoothValue;
    }
    if (total[n - 1] === 0) break;
    if (opts.effectiveOrder) effOrder = n;
    if (correct[n - 1] === 0) {
      if (smoothMethod === 'exp') {
        smoothMteval *= 2;
        precisions[n - 1] = 100 / (smoothMteval * total[n - 1]);
      } else if (smoothMethod === 'floor') {
        precisions[n - 1] = (100 * smoothValue) / total[n - 1];
      }
    } else {
      precisions[n - 1] = (100 * correct[n - 1]) / total[n - 1];
    }
  }
  const logs: number[] = [];
  for (let i = 0; i < effOrder; i++) logs.push(myLog(precisions[i]));
  const score = bp * Math.exp(pySum(logs) / effOrder);
  return { score, counts: correct, totals: total, precisions, bp, sysLen, refLen };
}

function checkStrings(xs: unknown, what: string): asserts xs is string[] {
  if (!Array.isArray(xs)) throw metricError(`${what}: expected an array of strings, got ${typeof xs}`);
  for (let i = 0; i < xs.length; i++) {
    if (typeof xs[i] !== 'string') throw metricError(`${what}[${i}]: expected a string, got ${xs[i] === null ? 'null' : typeof xs[i]}`);
  }
}

/**
 * Checks sacrebleu-style reference streams (references[k][i] is the k-th reference of sentence i;
 * null or undefined leaves sentence i with fewer references) and returns nrefs for the signature.
 */
export function checkReferenceStreams(references: unknown, numSentences: number, what = 'references'): number | 'var' {
  if (!Array.isArray(references) || references.length === 0) {
    throw metricError(`${what}: expected a non-empty array of reference streams (references[k][i] is the k-th reference of sentence i)`);
  }
  for (let k = 0; k < references.length; k++) {
    const stream = references[k] as unknown;
    if (!Array.isArray(stream)) {
      throw metricError(`${what}[${k}]: expected an array of strings (one reference stream), got ${typeof stream}`);
    }
    if (stream.length !== numSentences) {
      throw metricError(`${what}[${k}]: has ${stream.length} sentences but there are ${numSentences} hypotheses`);
    }
    for (let i = 0; i < stream.length; i++) {
      const x = stream[i] as unknown;
      if (x !== null && x !== undefined && typeof x !== 'string') {
        throw metricError(`${what}[${k}][${i}]: expected a string (or null), got ${typeof x}`);
      }
    }
  }
  const counts = new Set<number>();
  for (let i = 0; i < numSentences; i++) {
    let c = 0;
    for (const stream of references as (string | null | undefined)[][]) if (stream[i] != null) c++;
    counts.add(c);
  }
  if (numSentences === 0) return references.length;
  return counts.size === 1 ? [...counts][0] : 'var';
}

function bleuFromSegments(
  hypotheses: string[],
  references: (string | null | undefined)[][],
  o: ResolvedBleuOptions,
  nrefs: number | 'var',
): BleuScore {
  const order = o.maxNgramOrder;
  const stats = new Float64Array(2 + 2 * order);
  const counter = new BleuCounter(order, o.tokenize, o.lowercase);
  const refIds: Int32Array[] = [];
  for (let i = 0; i < hypotheses.length; i++) {
    refIds.length = 0;
    for (const stream of references) {
      const r = stream[i];
      if (r !== null && r !== undefined) refIds.push(counter.ids(r, true));
    }
    counter.add(counter.ids(hypotheses[i], false), refIds, stats);
  }
  const correct = Array.from(stats.subarray(2, 2 + order));
  const total = Array.from(stats.subarray(2 + order));
  const res = computeBleu(correct, total, stats[0], stats[1], {
    smoothMethod: o.smoothMethod,
    smoothValue: o.smoothValue,
    effectiveOrder: o.effectiveOrder,
    maxNgramOrder: order,
  });
  return { ...res, signature: signatureOf(o, nrefs) };
}

/**
 * Corpus BLEU as `sacrebleu.corpus_bleu(hypotheses, references, ...)` computes it.
 * `references[k][i]` is the k-th reference of sentence i (sacrebleu's reference streams).
 */
export function corpusBleu(hypotheses: string[], references: (string | null | undefined)[][], opts: BleuOptions = {}): BleuScore {
  checkStrings(hypotheses, 'hypotheses');
  const nrefs = checkReferenceStreams(references, hypotheses.length);
  return bleuFromSegments(hypotheses, references, resolveOptions(opts, false), nrefs);
}

/**
 * Sentence BLEU as `sacrebleu.sentence_bleu(hypothesis, references, ...)` computes it: 'exp'
 * smoothing and effective order by default. `references` are this sentence's references.
 */
export function sentenceBleu(hypothesis: string, references: string[], opts: BleuOptions = {}): BleuScore {
  if (typeof hypothesis !== 'string') throw metricError(`hypothesis: expected a string, got ${typeof hypothesis}`);
  checkStrings(references, 'references');
  if (references.length === 0) throw metricError('references: expected at least one reference string');
  return bleuFromSegments([hypothesis], references.map((r) => [r]), resolveOptions(opts, true), references.length);
}
