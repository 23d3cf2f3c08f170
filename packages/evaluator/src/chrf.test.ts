import { describe, expect, it } from 'vitest';
import { corpusChrf, sentenceChrf } from './chrf';
import { loadMetricsFixture } from './test_fixtures';

const { pairs, ref } = loadMetricsFixture();

describe('corpusChrf matches sacrebleu 2.6.0', () => {
  it('chrF2 on the fixture pairs', () => {
    const c = corpusChrf(pairs.map((p) => p.hyp), [pairs.map((p) => p.ref)]);
    console.log(`corpus chrF: ${c.score} vs ${ref.corpus_chrf}, diff ${Math.abs(c.score - ref.corpus_chrf)}`);
    expect(Math.abs(c.score - ref.corpus_chrf)).toBeLessThanOrEqual(1e-9);
    expect(c.name).toBe('chrF2');
    expect(c.signature).toBe(`nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:${ref.sacrebleu}`);
  });

  // Expected values from sacrebleu's test suite (test_chrf.py): beta 3, eps smoothing.
  it.each([
    [['abcdefg'], ['hijklmnop'], 0.0],
    [['a'], ['b'], 0.0],
    [[''], ['b'], 0.0],
    [[''], ['reference'], 0.0],
    [['aa'], ['ab'], 8.3333],
    [['a', 'b'], ['a', 'c'], 8.3333],
    [['a'], ['a'], 16.6667],
    [['a b c'], ['a b c'], 50.0],
    [['a b c'], ['abc'], 50.0],
    [[' risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists .'],
      ['risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists .'], 63.36173],
    [[' Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. '],
      ['Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich.'], 64.1302698],
    [['Niemand hat die Absicht, eine Mauer zu errichten'], ['Niemand hat die Absicht, eine Mauer zu errichten'], 100.0],
  ])('eps smoothing %j vs %j', (h, r, expected) => {
    expect(Math.abs(corpusChrf(h, [r], { beta: 3, epsSmoothing: true }).score - expected)).toBeLessThan(1e-4);
  });

  it.each([
    [['a'], ['a'], 100.0],
    [[''], ['reference'], 0.0],
    [['a b c'], ['abc'], 100.0],
    [['a', 'b'], ['a', 'c'], 50.0],
    [['aa'], ['ab'], 25.0],
  ])('effective order %j vs %j', (h, r, expected) => {
    expect(Math.abs(corpusChrf(h, [r], { beta: 3 }).score - expected)).toBeLessThan(1e-4);
  });

  it('keeping whitespace', () => {
    const s = corpusChrf(['Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich.'], [['Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich.']], { beta: 3, whitespace: true });
    expect(Math.abs(s.score - 67.3481606)).toBeLessThan(1e-4);
  });

  it('sentence level with eps smoothing', () => {
    const s = sentenceChrf('Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře.', ['Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře.'], { epsSmoothing: true });
    expect(Math.abs(s.score - 39.14078509)).toBeLessThan(1e-4);
  });

  it('chrF++ names itself and counts word n-grams', () => {
    const c = corpusChrf(['the cat sat.'], [['the cat sat.']], { wordOrder: 2 });
    expect(c.name).toBe('chrF2++');
    expect(c.score).toBeCloseTo(100, 12);
    expect(c.stats.length).toBe(3 * 8);
    expect(c.signature).toContain('|nw:2|');
  });

  it('several references: the best one per sentence', () => {
    const one = corpusChrf(['the cat sat'], [['a dog ran']]).score;
    const two = corpusChrf(['the cat sat'], [['a dog ran'], ['the cat sat']]).score;
    expect(one).toBeLessThan(100);
    expect(two).toBeCloseTo(100, 12);
  });
});
