import { describe, expect, it } from 'vitest';
import { corpusBleu, sentenceBleu, computeBleu } from './bleu';
import { loadMetricsFixture, worst } from './test_fixtures';
import { tokenize13a, tokenizeIntl, tokenizeChar } from './tokenizers';
// The error module of core alone (its index pulls in the whole package).
import { PeftError } from '../../core/src/errors';

const { pairs, ref } = loadMetricsFixture();
const hyps = pairs.map((p) => p.hyp);
const refs = pairs.map((p) => p.ref);
const refs2 = pairs.map((p) => p.ref2);
const TOL = 1e-9;

describe('corpusBleu matches sacrebleu 2.6.0 on the fixture pairs', () => {
  it('one reference, default options: score, precisions, bp, lengths, counts', () => {
    const b = corpusBleu(hyps, [refs]);
    const r = ref.corpus_bleu_1ref;
    console.log(`corpus BLEU 1 ref: ${b.score} vs ${r.score}, diff ${Math.abs(b.score - r.score)}`);
    expect(Math.abs(b.score - r.score)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(b.bp - r.bp)).toBeLessThanOrEqual(TOL);
    b.precisions.forEach((p, i) => expect(Math.abs(p - r.precisions[i])).toBeLessThanOrEqual(TOL));
    expect(b.sysLen).toBe(r.sys_len);
    expect(b.refLen).toBe(r.ref_len);
    if (r.counts) expect(b.counts).toEqual(r.counts);
    if (r.totals) expect(b.totals).toEqual(r.totals);
    expect(b.signature).toBe(`nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:${ref.sacrebleu}`);
  });

  it('two references', () => {
    const b = corpusBleu(hyps, [refs, refs2]);
    const r = ref.corpus_bleu_2ref;
    console.log(`corpus BLEU 2 refs: diff ${Math.abs(b.score - r.score)}`);
    expect(Math.abs(b.score - r.score)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(b.bp - r.bp)).toBeLessThanOrEqual(TOL);
    b.precisions.forEach((p, i) => expect(Math.abs(p - r.precisions[i])).toBeLessThanOrEqual(TOL));
    expect([b.sysLen, b.refLen]).toEqual([r.sys_len, r.ref_len]);
    expect(b.signature.startsWith('nrefs:2|')).toBe(true);
  });

  it('lowercased, intl and char tokenizers', () => {
    const lc = corpusBleu(hyps, [refs], { lowercase: true });
    const intl = corpusBleu(hyps, [refs], { tokenize: 'intl' });
    const chr = corpusBleu(hyps, [refs], { tokenize: 'char' });
    const d = [Math.abs(lc.score - ref.corpus_bleu_lowercase), Math.abs(intl.score - ref.corpus_bleu_intl), Math.abs(chr.score - ref.corpus_bleu_char)];
    console.log(`corpus BLEU lowercase / intl / char diffs: ${d.join(' / ')}`);
    for (const x of d) expect(x).toBeLessThanOrEqual(TOL);
    expect(lc.signature).toBe(`nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:${ref.sacrebleu}`);
    expect(chr.signature).toContain('|tok:char|');
  });

  it('every sentence BLEU (sacrebleu.sentence_bleu defaults)', () => {
    const diffs = hyps.map((h, i) => Math.abs(sentenceBleu(h, [refs[i]]).score - ref.sentence_bleu[i]));
    const w = worst(diffs);
    console.log(`sentence BLEU: worst diff ${w.max} at pair ${w.at} of ${diffs.length}`);
    expect(w.max).toBeLessThanOrEqual(TOL);
    expect(sentenceBleu(hyps[1], [refs[1]]).signature).toBe(`nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:${ref.sacrebleu}`);
  });
});

// Expected values from sacrebleu's own test suite (test_bleu.py, test_sentence_bleu.py).
describe('sacrebleu test-suite cases', () => {
  const hyps3 = ['The dog bit the man.', "It wasn't surprising.", 'The man had just bitten him.'];
  const refs3 = [
    ['The dog bit the man.', 'It was not unexpected.', 'The man bit him first.'],
    ['The dog had bit the man.', 'No one was surprised.', 'The man had bitten the dog.'],
  ];
  it.each([
    [{}, 48.530827],
    [{ tokenize: 'none' as const }, 49.1919566],
    [{ tokenize: 'intl' as const }, 43.91623493],
    [{ smoothMethod: 'none' as const }, 48.530827],
  ])('corpus BLEU with %o', (opts, expected) => {
    expect(Math.abs(corpusBleu(hyps3, refs3, opts).score - expected)).toBeLessThan(1e-6);
  });

  it('empty hypotheses are kept and score 0', () => {
    const b = corpusBleu(['', '', ''], refs3);
    expect(b.score).toBe(0);
    expect(b.sysLen).toBe(0);
  });

  // raw_corpus_bleu = tokenize 'none', 'floor' smoothing, effective order.
  const raw = (h: string[], r: string[][], v?: number) => corpusBleu(h, r, { tokenize: 'none', smoothMethod: 'floor', smoothValue: v, effectiveOrder: true }).score / 100;
  it('raw BLEU cases', () => {
    expect(raw(['this is a test', 'another test'], [['ref1', 'ref2']], 0.01)).toBe(0);
    expect(Math.abs(raw(['this is a test'], [['this is a test']], 0.01) - 1)).toBeLessThan(1e-8);
    expect(Math.abs(raw(['this is a fest'], [['this is a test']], 0.01) - 0.223606797749979)).toBeLessThan(1e-8);
    expect(Math.abs(raw(['test'], [['a test']], 0.01) - 0.3678794411714425)).toBeLessThan(1e-8);
    expect(Math.abs(raw(['a little test'], [['a test']], 0.01) - 0.03218297948685433)).toBeLessThan(1e-8);
    expect(Math.abs(raw(['am I am a character sequence'], [['I am a symbol string sequence a a']]) - 0.1555722182)).toBeLessThan(1e-8);
    expect(raw(['am I am a character sequence'], [['I am a symbol string sequence a a']], 0)).toBe(0);
  });

  it('statistics and scoring', () => {
    const b = corpusBleu(['am I am a character sequence'], [['I am a symbol string sequence a a']], { tokenize: 'none' });
    expect(b.counts).toEqual([4, 2, 1, 0]);
    expect(b.totals).toEqual([6, 5, 4, 3]);
    expect(Math.abs(computeBleu([9, 7, 5, 3], [10, 8, 6, 4], 11, 11).score / 100 - 0.8375922397)).toBeLessThan(1e-8);
  });

  const REF = 'producţia de zahăr brut se exprimă în zahăr alb;';
  const SYS = 'Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;';
  it.each([
    ['exp', undefined, false, '13a', 8.493],
    ['none', undefined, false, '13a', 0.0],
    ['floor', undefined, false, '13a', 4.51688],
    ['floor', 0.5, false, '13a', 10.1],
    ['add-k', undefined, false, '13a', 14.882],
    ['add-k', 2, false, '13a', 21.389],
    ['exp', undefined, false, 'none', 7.347],
    ['exp', undefined, false, 'intl', 8.493],
    ['exp', undefined, false, 'char', 40.8759],
    ['exp', undefined, true, 'char', 42.0267],
  ] as const)('sentence BLEU smooth %s value %s lowercase %s tok %s', (smoothMethod, smoothValue, lowercase, tokenize, expected) => {
    const s = sentenceBleu(SYS, [REF], { smoothMethod, smoothValue, lowercase, tokenize });
    expect(Math.abs(s.score - expected)).toBeLessThan(1e-3);
  });

  it('signature shows the smoothing value as sacrebleu does', () => {
    expect(sentenceBleu(SYS, [REF], { smoothMethod: 'floor' }).signature).toContain('|smooth:floor[0.10]|');
    expect(sentenceBleu(SYS, [REF], { smoothMethod: 'add-k', smoothValue: 2 }).signature).toContain('|smooth:add-k[2.00]|');
    expect(corpusBleu(['a', 'b'], [['a', 'b'], ['a', null]]).signature).toContain('nrefs:var|');
  });
});

// sacrebleu's TokenizerRegexp as four global regex replacements: JS's replace finds the same leftmost
// non-overlapping matches as Python's re.sub, so this is the plain transcription to fuzz the scanner against.
function regex13a(line: string): string[] {
  line = line.replaceAll('<skipped>', '').replaceAll('-\n', '').replaceAll('\n', ' ');
  line = line.replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  line = ` ${line} `
    .replace(/([{-~[-` -&(-+:-@/])/g, ' $1 ')
    .replace(/([^0-9])([.,])/g, '$1 $2 ')
    .replace(/([.,])([^0-9])/g, ' $1 $2')
    .replace(/([0-9])(-)/g, '$1 $2 ');
  return line.split(/[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/).filter((t) => t.length > 0);
}

describe('tokenizers', () => {
  it('13a scanner equals the four regex passes on random strings of the characters that matter', () => {
    const alphabet = ['a', 'B', '1', '9', '.', ',', '-', ' ', '  ', '$', "'", '&', ';', '(', '/', '\n', 'é', '😀', '\u0085', '\u00a0', '&amp;', '\t', '_'];
    let seed = 12345;
    const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
    for (let k = 0; k < 20000; k++) {
      const len = 1 + Math.floor(rnd() * 14);
      let s = '';
      for (let j = 0; j < len; j++) s += alphabet[Math.floor(rnd() * alphabet.length)];
      const want = regex13a(s);
      const got = tokenize13a(s);
      if (JSON.stringify(got) !== JSON.stringify(want)) expect([s, got]).toEqual([s, want]);
    }
    for (const p of pairs) for (const s of [p.hyp, p.ref, p.ref2]) expect(tokenize13a(s)).toEqual(regex13a(s));
  });

  it('13a splits punctuation but keeps decimal points, thousands separators, hyphens in words and double dashes', () => {
    expect(tokenize13a('It costs $3,000.50 -- a well-known fact, isn\'t it?')).toEqual(['It', 'costs', '$', '3,000.50', '--', 'a', 'well-known', 'fact', ',', "isn't", 'it', '?']);
    expect(tokenize13a('1990-2000.')).toEqual(['1990', '-', '2000', '.']);
    expect(tokenize13a('&quot;A&amp;B&quot; &lt;skipped&gt;<skipped>')).toEqual(['"', 'A', '&', 'B', '"', '<', 'skipped', '>']);
    expect(tokenize13a('line-\nbreak\nnext')).toEqual(['linebreak', 'next']);
  });
  it('intl separates Unicode punctuation and symbols', () => {
    expect(tokenizeIntl('«Bonjour», dit-il… 3,5 €')).toEqual(['«', 'Bonjour', '»', ',', 'dit', '-', 'il', '…', '3,5', '€']);
  });
  it('char takes code points, not UTF-16 units, and drops Python whitespace', () => {
    expect(tokenizeChar('a 😀\u0085b\ufeff')).toEqual(['a', '😀', 'b', '\ufeff']);
  });
});

describe('errors name the argument at fault', () => {
  it('rejects bad inputs', () => {
    expect(() => corpusBleu(['a'], [['a', 'b']])).toThrow(/references\[0\]: has 2 sentences but there are 1 hypotheses/);
    expect(() => corpusBleu(['a'], ['a'] as unknown as string[][])).toThrow(/references\[0\]/);
    expect(() => corpusBleu(['a', 3 as unknown as string], [['a', 'b']])).toThrow(/hypotheses\[1\]/);
    expect(() => corpusBleu(['a'], [['a']], { tokenize: 'zh' as '13a' })).toThrow(/tokenize/);
    expect(() => sentenceBleu('a', [])).toThrow(/references/);
  });
  it("throws errors that core's PeftError.isInstance recognizes, with code INVALID_ARGUMENT", () => {
    let caught: unknown;
    try {
      corpusBleu(['a'], [['a', 'b']]);
    } catch (e) {
      caught = e;
    }
    expect(PeftError.isInstance(caught)).toBe(true);
    expect((caught as PeftError).code).toBe('INVALID_ARGUMENT');
    expect((caught as Error).name).toBe('PeftError');
  });
});
