import { describe, expect, it } from 'vitest';
import { accuracy, exactMatch, precisionRecallF1 } from './classification';

describe('classification metrics (scikit-learn conventions)', () => {
  // y_true / y_pred with sklearn's figures computed by hand:
  // class 0: tp 1, pred 2, true 2; class 1: tp 1, pred 1, true 2; class 2: tp 2, pred 3, true 2.
  const yTrue = [0, 0, 1, 1, 2, 2];
  const yPred = [0, 2, 1, 0, 2, 2];
  it('accuracy', () => {
    expect(accuracy(yPred, yTrue)).toBeCloseTo(4 / 6, 15);
    expect(accuracy([], [])).toBe(0);
  });
  it('per class, macro, micro, weighted', () => {
    const r = precisionRecallF1(yPred, yTrue);
    expect(r.labels).toEqual([0, 1, 2]);
    expect(r.perClass.map((c) => c.precision)).toEqual([1 / 2, 1, 2 / 3]);
    expect(r.perClass.map((c) => c.recall)).toEqual([1 / 2, 1 / 2, 1]);
    expect(r.perClass[2].f1).toBeCloseTo(0.8, 15);
    expect(r.macro.precision).toBeCloseTo((1 / 2 + 1 + 2 / 3) / 3, 15);
    expect(r.macro.f1).toBeCloseTo((0.5 + 2 / 3 + 0.8) / 3, 15);
    expect(r.micro.precision).toBeCloseTo(4 / 6, 15);
    expect(r.micro.f1).toBeCloseTo(4 / 6, 15);
    expect(r.weighted.recall).toBeCloseTo(4 / 6, 15);
  });
  it('a class never predicted gets precision zeroDivision (default 0)', () => {
    const r = precisionRecallF1(['a', 'a'], ['a', 'b']);
    expect(r.labels).toEqual(['a', 'b']);
    expect(r.perClass[1]).toEqual({ precision: 0, recall: 0, f1: 0, support: 1 });
    expect(precisionRecallF1(['a', 'a'], ['a', 'b'], { zeroDivision: 1 }).perClass[1].precision).toBe(1);
  });
  it('exact match with evaluate-style normalization', () => {
    expect(exactMatch(['Paris', 'rome'], ['Paris', 'Rome'])).toBe(0.5);
    expect(exactMatch(['Paris!', 'rome'], ['paris', 'Rome'], { ignoreCase: true, ignorePunctuation: true })).toBe(1);
    expect(exactMatch(['the answer is 42'], ['answer is'], { regexesToIgnore: ['the ', ' \\d+'] })).toBe(1);
    expect(exactMatch(['a1'], ['a2'], { ignoreNumbers: true })).toBe(1);
  });
  it('rejects mismatched lengths', () => {
    expect(() => accuracy([1], [1, 2])).toThrow(/references: has 2 entries but there are 1 predictions/);
  });
});
