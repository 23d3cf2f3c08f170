import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { porterStem } from './porter';
import { loadMetricsFixture } from './test_fixtures';

function mismatches(stems: Record<string, string>): string[] {
  const bad: string[] = [];
  for (const [w, s] of Object.entries(stems)) {
    const got = porterStem(w);
    if (got !== s) bad.push(`${w}: nltk ${s}, ours ${got}`);
  }
  return bad;
}

describe('porterStem gives NLTK 3.8 PorterStemmer() stems', () => {
  const { ref } = loadMetricsFixture();
  it.skipIf(!ref.porter_stems)('every word of the metric fixture pairs (reference.json porter_stems)', () => {
    const stems = ref.porter_stems!;
    const bad = mismatches(stems);
    console.log(`Porter stems: ${bad.length} mismatches of ${Object.keys(stems).length} fixture words`);
    expect(bad).toEqual([]);
  });

  it('20,000 dictionary words recorded by tools/reference/evaluator_stems.py', () => {
    const file = JSON.parse(readFileSync(new URL('../fixtures/porter_stems.json', import.meta.url), 'utf8')) as { nltk: string; stems: Record<string, string> };
    expect(file.nltk).toBe('3.8');
    const bad = mismatches(file.stems);
    console.log(`Porter stems: ${bad.length} mismatches of ${Object.keys(file.stems).length} recorded words`);
    expect(bad).toEqual([]);
  });

  it('NLTK extensions that the original algorithm lacks', () => {
    const cases: Record<string, string> = {
      dying: 'die', lying: 'lie', skies: 'sky', news: 'news', innings: 'inning', proceed: 'proceed',
      ties: 'tie', died: 'die', cried: 'cri', happy: 'happi', enjoy: 'enjoy', day: 'day', spy: 'spi',
      generously: 'gener', radically: 'radic', hopefully: 'hope', analogi: 'analog', is: 'is', a: 'a',
      relational: 'relat', conditional: 'condit', controlling: 'control', Running: 'run',
    };
    for (const [w, s] of Object.entries(cases)) expect([w, porterStem(w)]).toEqual([w, s]);
  });
});
