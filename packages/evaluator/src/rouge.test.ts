import { describe, expect, it } from 'vitest';
import { rougeScore, rougeTokenize, type RougeType } from './rouge';
import { porterStem } from './porter';
import { loadMetricsFixture, worst } from './test_fixtures';

const { pairs, ref } = loadMetricsFixture();
const TYPES: RougeType[] = ['rouge1', 'rouge2', 'rougeL'];
const FIELDS = ['precision', 'recall', 'fmeasure'] as const;
const TOL = 1e-6;

describe('rougeScore matches torchmetrics 1.9.0 (rouge-score algorithm) on the fixture pairs', () => {
  for (const stem of [false, true]) {
    const tag = stem ? '_stem' : '';
    const per = ref[`rouge_per_pair${tag}`] as Record<string, number>[] | undefined;
    const mean = ref[`rouge_mean${tag}`] as Record<string, number> | undefined;
    it.skipIf(!per || !mean)(`every figure ${stem ? 'with' : 'without'} the stemmer`, () => {
      // torchmetrics' ROUGEScore(h, r) per pair: prediction = hyp, target = ref.
      const r = rougeScore(pairs.map((p) => p.hyp), pairs.map((p) => p.ref), { rougeTypes: TYPES, useStemmer: stem });
      const diffs: number[] = [];
      r.perExample.forEach((e, i) => {
        for (const t of TYPES) for (const f of FIELDS) diffs.push(Math.abs(e[t]![f] - per![i][`${t}_${f}`]));
      });
      const meanDiffs: number[] = [];
      for (const t of TYPES) for (const f of FIELDS) meanDiffs.push(Math.abs(r.mean[t]![f] - mean![`${t}_${f}`]));
      const w = worst(diffs);
      const wm = worst(meanDiffs);
      console.log(`ROUGE${stem ? ' (stemmed)' : ''}: worst per-pair diff ${w.max} (${diffs.length} figures), worst mean diff ${wm.max}`);
      expect(w.max).toBeLessThanOrEqual(TOL);
      expect(wm.max).toBeLessThanOrEqual(TOL);
    });
  }
});

describe('rouge-score details', () => {
  it('tokenizes as rouge-score: lowercase, [a-z0-9] runs, stems of tokens longer than 3', () => {
    expect(rougeTokenize("The U.S.-led coalition's 2,000 troops!")).toEqual(['the', 'u', 's', 'led', 'coalition', 's', '2', '000', 'troops']);
    expect(rougeTokenize('Running dogs ran', porterStem)).toEqual(['run', 'dog', 'ran']);
    expect(rougeTokenize('İstanbul café')).toEqual(['i', 'stanbul', 'caf']);
  });

  it('hand-computed rouge1 / rouge2 / rougeL', () => {
    const r = rougeScore(['the cat was found under the bed'], ['the cat was under the bed'], { rougeTypes: ['rouge1', 'rouge2', 'rougeL'] });
    const e = r.perExample[0];
    expect(e.rouge1).toEqual({ precision: 6 / 7, recall: 1, fmeasure: (2 * (6 / 7)) / (6 / 7 + 1) });
    expect(e.rouge2!.precision).toBeCloseTo(4 / 6, 15);
    expect(e.rouge2!.recall).toBeCloseTo(4 / 5, 15);
    expect(e.rougeL!.recall).toBe(1);
  });

  it('rougeLsum: sentences split on newlines, summary-level union LCS', () => {
    // Lin (2004) §3.2 example: r = w1 w2 w3 w4 w5; c1 = w1 w2 w6 w7 w8; c2 = w1 w3 w8 w9 w5.
    // Union LCS of r with {c1, c2} = w1 w2 w3 w5: 4 hits over |r| = 5 and |c| = 10.
    const target = 'w1 w2 w3 w4 w5';
    const pred = 'w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5';
    const r = rougeScore([pred], [target], { rougeTypes: ['rougeLsum', 'rougeL'] });
    expect(r.perExample[0].rougeLsum!.recall).toBeCloseTo(4 / 5, 15);
    expect(r.perExample[0].rougeLsum!.precision).toBeCloseTo(4 / 10, 15);
    // Without newlines it is plain rougeL on the whole text.
    const flat = rougeScore([pred.replace('\n', ' ')], [target], { rougeTypes: ['rougeLsum', 'rougeL'] }).perExample[0];
    expect(flat.rougeLsum).toEqual(flat.rougeL);
    // Empty lines are dropped; an empty side scores 0.
    expect(rougeScore(['\n\n'], ['a b'], { rougeTypes: ['rougeLsum'] }).perExample[0].rougeLsum).toEqual({ precision: 0, recall: 0, fmeasure: 0 });
  });

  it('several references: best F per type (or their average)', () => {
    const best = rougeScore(['a b c d'], [['x y z', 'a b c d']], { rougeTypes: ['rouge1'] });
    expect(best.perExample[0].rouge1!.fmeasure).toBe(1);
    const avg = rougeScore(['a b c d'], [['x y z', 'a b c d']], { rougeTypes: ['rouge1'], accumulate: 'avg' });
    expect(avg.perExample[0].rouge1!.fmeasure).toBe(0.5);
  });

  it('names what is wrong', () => {
    expect(() => rougeScore(['a'], ['a', 'b'])).toThrow(/references: has 2 entries but there are 1 predictions/);
    expect(() => rougeScore(['a'], ['a'], { rougeTypes: ['rougeX' as RougeType] })).toThrow(/rougeX/);
    expect(() => rougeScore([1 as unknown as string], ['a'])).toThrow(/predictions\[0\]/);
  });
});
