// More reference figures on the committed fixture pairs (packages/evaluator/fixtures/evaluator_ref.json,
// recorded by tools/reference/evaluator_ref.py): smoothing, tokenizers, several references, chrF++, rougeLsum.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { corpusBleu, sentenceBleu, type BleuOptions } from './bleu';
import { corpusChrf, sentenceChrf, type ChrfOptions } from './chrf';
import { rougeScore, type RougeType } from './rouge';
import { worst, type Pair } from './test_fixtures';

const pairsBytes = readFileSync(new URL('../../../fixtures/metrics/pairs.json', import.meta.url));
const ref = JSON.parse(readFileSync(new URL('../fixtures/evaluator_ref.json', import.meta.url), 'utf8'));
const samePairs = createHash('sha256').update(pairsBytes).digest('hex') === ref.pairs_sha256;
const pairs = JSON.parse(pairsBytes.toString('utf8')) as Pair[];
const hyps = pairs.map((p) => p.hyp);
const refs = pairs.map((p) => p.ref);
const refs2 = pairs.map((p) => p.ref2);
const TOL = 1e-9;

describe.skipIf(!samePairs)('sacrebleu 2.6.0 figures beyond the shared fixture', () => {
  const bleuCases: Record<string, [BleuOptions, (string | null)[][]]> = {
    none: [{ tokenize: 'none' }, [refs]],
    floor: [{ smoothMethod: 'floor' }, [refs]],
    'floor_0.5': [{ smoothMethod: 'floor', smoothValue: 0.5 }, [refs]],
    'add-k': [{ smoothMethod: 'add-k' }, [refs]],
    'add-k_2': [{ smoothMethod: 'add-k', smoothValue: 2 }, [refs]],
    smooth_none: [{ smoothMethod: 'none' }, [refs]],
    effective_order: [{ effectiveOrder: true }, [refs]],
    intl_lowercase: [{ tokenize: 'intl', lowercase: true }, [refs]],
    max_order_2: [{ maxNgramOrder: 2 }, [refs]],
    char_2ref: [{ tokenize: 'char' }, [refs, refs2]],
    var_refs: [{}, [refs, refs2.map((r, i) => (i % 3 === 0 ? null : r))]],
  };
  it.each(Object.keys(bleuCases))('corpus BLEU %s: score, counts, totals, precisions, bp, lengths, signature', (name) => {
    const [opts, streams] = bleuCases[name];
    const b = corpusBleu(hyps, streams, opts);
    const r = ref.corpus_bleu[name];
    expect(Math.abs(b.score - r.score)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(b.bp - r.bp)).toBeLessThanOrEqual(TOL);
    b.precisions.forEach((p, i) => expect(Math.abs(p - r.precisions[i])).toBeLessThanOrEqual(TOL));
    expect(b.counts).toEqual(r.counts);
    expect(b.totals).toEqual(r.totals);
    expect([b.sysLen, b.refLen]).toEqual([r.sys_len, r.ref_len]);
    expect(b.signature).toBe(r.signature);
  });

  it.each([
    ['sentence_bleu_2ref', (h: string, i: number) => sentenceBleu(h, [refs[i], refs2[i]]).score],
    ['sentence_bleu_floor', (h: string, i: number) => sentenceBleu(h, [refs[i]], { smoothMethod: 'floor' }).score],
    ['sentence_bleu_add-k', (h: string, i: number) => sentenceBleu(h, [refs[i]], { smoothMethod: 'add-k' }).score],
    ['sentence_bleu_char_lc', (h: string, i: number) => sentenceBleu(h, [refs[i]], { tokenize: 'char', lowercase: true }).score],
    ['sentence_chrf', (h: string, i: number) => sentenceChrf(h, [refs[i]]).score],
    ['sentence_chrf++', (h: string, i: number) => sentenceChrf(h, [refs[i]], { wordOrder: 2 }).score],
  ] as const)('%s of every pair', (key, f) => {
    const w = worst(hyps.map((h, i) => Math.abs(f(h, i) - ref[key][i])));
    console.log(`${key}: worst diff ${w.max}`);
    expect(w.max).toBeLessThanOrEqual(TOL);
  });

  const chrfCases: Record<string, [ChrfOptions, string[][]]> = {
    chrf: [{}, [refs]],
    chrf_2ref: [{}, [refs, refs2]],
    'chrf++': [{ wordOrder: 2 }, [refs]],
    'chrf++_2ref': [{ wordOrder: 2 }, [refs, refs2]],
    chrf_lowercase: [{ lowercase: true }, [refs]],
    chrf_whitespace: [{ whitespace: true }, [refs]],
    chrf_eps: [{ epsSmoothing: true }, [refs]],
    chrf_beta1: [{ beta: 1 }, [refs]],
  };
  it.each(Object.keys(chrfCases))('corpus %s', (name) => {
    const [opts, streams] = chrfCases[name];
    const c = corpusChrf(hyps, streams, opts);
    const r = ref.corpus_chrf[name];
    console.log(`corpus ${name}: diff ${Math.abs(c.score - r.score)}`);
    expect(Math.abs(c.score - r.score)).toBeLessThanOrEqual(TOL);
    expect(c.name).toBe(r.name);
    expect(c.signature).toBe(r.signature);
  });
});

describe.skipIf(!samePairs)('ROUGE beyond the shared fixture', () => {
  const TYPES: RougeType[] = ['rouge1', 'rouge2', 'rougeL'];
  it.each(['best', 'avg'] as const)('two references per prediction, accumulate %s (torchmetrics 1.9.0)', (accumulate) => {
    const r = rougeScore(hyps, refs.map((x, i) => [x, refs2[i]]), { rougeTypes: TYPES, accumulate });
    const exp = ref[`rouge_2ref_${accumulate}`] as Record<string, number>[];
    const diffs: number[] = [];
    r.perExample.forEach((e, i) => {
      for (const t of TYPES) for (const f of ['precision', 'recall', 'fmeasure'] as const) diffs.push(Math.abs(e[t]![f] - exp[i][`${t}_${f}`]));
    });
    const w = worst(diffs);
    console.log(`ROUGE 2 refs (${accumulate}): worst diff ${w.max}`);
    expect(w.max).toBeLessThanOrEqual(1e-6);
  });

  it.each([false, true])('rougeLsum on multi-line texts (rouge-score), stemming %s', (stem) => {
    const groups = ref.rouge_lsum_groups as { hyp: string; ref: string }[];
    const exp = ref[stem ? 'rouge_lsum_stem' : 'rouge_lsum'] as Record<string, number>[];
    const types: RougeType[] = ['rouge1', 'rougeL', 'rougeLsum'];
    const r = rougeScore(groups.map((g) => g.hyp), groups.map((g) => g.ref), { rougeTypes: types, useStemmer: stem });
    const diffs: number[] = [];
    r.perExample.forEach((e, i) => {
      for (const t of types) for (const f of ['precision', 'recall', 'fmeasure'] as const) diffs.push(Math.abs(e[t]![f] - exp[i][`${t}_${f}`]));
    });
    const w = worst(diffs);
    console.log(`rougeLsum (stem ${stem}): worst diff ${w.max} over ${groups.length} multi-line texts`);
    expect(w.max).toBeLessThanOrEqual(1e-12);
  });
});
