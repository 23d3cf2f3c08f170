import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoTokenizer } from '@peftjs/models';
import {
  countLabelTokens,
  dataCollatorWithPadding,
  epochOrder,
  loadTextDataset,
  lrLambda,
  packExamples,
  parseCsv,
  parseRecords,
  resolveWarmupSteps,
  tokenizeRecords,
} from './index';

const tokDir = fileURLToPath(new URL('../../models/test-data/tiny-bpe/', import.meta.url));

describe('data', () => {
  it('pads each batch to its longest row: mask 0 and label -100 on padding; equal rows are used as given', () => {
    const c = dataCollatorWithPadding({ padTokenId: 9 });
    const b = c([{ inputIds: [1, 2, 3] }, { inputIds: [4], labels: [-100] }]);
    expect(b).toEqual({
      inputIds: [[1, 2, 3], [4, 9, 9]],
      attentionMask: [[1, 1, 1], [1, 0, 0]],
      labels: [[1, 2, 3], [-100, -100, -100]],
    });
    const given = { inputIds: [[5, 6], [7, 8]], attentionMask: [[0, 1], [1, 1]], labels: [[-100, 6], [7, 8]] };
    expect(c(given.inputIds.map((r, i) => ({ inputIds: r, attentionMask: given.attentionMask[i], labels: given.labels[i] })))).toEqual(given);
    expect(dataCollatorWithPadding({ paddingSide: 'left', padToMultipleOf: 4 })([{ inputIds: [1, 2] }]).inputIds).toEqual([[0, 0, 1, 2]]);
    expect(countLabelTokens(b)).toBe(2); // shifted: row 0 predicts 2 and 3; row 1 nothing
  });

  it('parses JSONL, JSON and CSV (quotes, escaped quotes, newlines in fields), naming the bad line', () => {
    expect(parseRecords('{"text":"a"}\n\n{"text":"b"}\n', 'jsonl')).toEqual([{ text: 'a' }, { text: 'b' }]);
    expect(() => parseRecords('{"text":"a"}\n{oops', 'jsonl', 'f.jsonl')).toThrow(/f\.jsonl: line 2 is not valid JSON/);
    expect(parseRecords('{"data":[{"text":"x"}]}', 'json')).toEqual([{ text: 'x' }]);
    expect(parseCsv('prompt,completion\r\n"Hi, you","say ""yo""\nnow"\nq,a\n')).toEqual([
      { prompt: 'Hi, you', completion: 'say "yo"\nnow' },
      { prompt: 'q', completion: 'a' },
    ]);
    expect(() => parseCsv('a,b\n1\n', 'd.csv')).toThrow(/d\.csv: row 2 has 1 fields, the header has 2/);
  });

  it('tokenizes text, prompt → completion (labels -100 on the prompt) and chat (assistant turns only), truncates and packs', async () => {
    const tok = await AutoTokenizer.fromPretrained(tokDir);
    const eos = tok.eosTokenId!;
    const [text] = tokenizeRecords([{ text: 'the whale' }], { tokenizer: tok });
    expect(text.inputIds.at(-1)).toBe(eos);
    expect(text.labels).toEqual(text.inputIds);

    const [pc] = tokenizeRecords([{ prompt: 'Call me', completion: ' Ishmael' }], { tokenizer: tok });
    const p = tok.encode('Call me');
    expect(pc.inputIds.slice(0, p.length)).toEqual(p);
    expect(pc.labels!.slice(0, p.length).every((l) => l === -100)).toBe(true);
    expect(pc.labels!.slice(p.length)).toEqual(pc.inputIds.slice(p.length));
    const [pcAll] = tokenizeRecords([{ prompt: 'Call me', completion: ' Ishmael' }], { tokenizer: tok, completionOnlyLoss: false });
    expect(pcAll.labels).toEqual(pcAll.inputIds);

    const [chat] = tokenizeRecords([{ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'the sea' }] }], { tokenizer: tok });
    const trained = chat.inputIds.filter((_, i) => chat.labels![i] !== -100);
    expect(trained.length).toBeGreaterThan(0);
    expect(trained.length).toBeLessThan(chat.inputIds.length);
    expect(tok.decode(trained.slice(0, tok.encode('the sea', { addSpecialTokens: false }).length))).toBe('the sea');

    const long = tokenizeRecords([{ text: 'a b c d e f g h i j k l m n o p' }], { tokenizer: tok, maxLength: 5 });
    expect(long[0].inputIds).toHaveLength(5);
    const packed = packExamples([{ inputIds: [1, 2, 3] }, { inputIds: [4, 5, 6, 7] }], 3);
    expect(packed.map((e) => e.inputIds)).toEqual([[1, 2, 3], [4, 5, 6], [7]]);

    expect(() => tokenizeRecords([{ body: 'x' }], { tokenizer: tok }, 'd.jsonl')).toThrow(/d\.jsonl: record 0 has none of the fields "text"/);
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-data-'));
    writeFileSync(join(dir, 'd.csv'), 'text\nthe whale\nthe sea\n');
    const fromCsv = await loadTextDataset(join(dir, 'd.csv'), { tokenizer: tok, packing: true, maxLength: 4 });
    expect(fromCsv.every((e) => e.inputIds.length <= 4)).toBe(true);
  });

  it('shuffles with a seed: a permutation, the same for the same (seed, epoch), different across epochs; in order without shuffle', () => {
    const a = epochOrder(50, 0, 42, true);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(epochOrder(50, 0, 42, true)).toEqual(a);
    expect(epochOrder(50, 1, 42, true)).not.toEqual(a);
    expect(epochOrder(50, 0, 43, true)).not.toEqual(a);
    expect(epochOrder(5, 3, 42, false)).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('learning-rate schedules (HF transformers.optimization)', () => {
  it('linear with warmup: the fixture\'s rates, 0 at step 0', () => {
    const lrs = Array.from({ length: 10 }, (_, s) => 5e-3 * lrLambda('linear', s, 3, 10));
    const expected = [0, 1 / 3, 2 / 3, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7].map((f) => 5e-3 * f);
    lrs.forEach((l, i) => expect(l).toBeCloseTo(expected[i], 12));
  });

  it('cosine, cosine with restarts, constant (with warmup)', () => {
    expect(lrLambda('cosine', 2, 2, 12)).toBe(1);
    expect(lrLambda('cosine', 7, 2, 12)).toBeCloseTo(0.5, 12);
    expect(lrLambda('cosine', 12, 2, 12)).toBeCloseTo(0, 12);
    expect(lrLambda('cosine_with_restarts', 7, 2, 12, 2)).toBeCloseTo(1, 12); // a new cycle starts half-way
    expect(lrLambda('cosine_with_restarts', 12, 2, 12)).toBe(0);
    expect(lrLambda('constant_with_warmup', 1, 4, 10)).toBe(0.25);
    expect(lrLambda('constant_with_warmup', 6, 4, 10)).toBe(1);
    expect(lrLambda('constant', 0, 4, 10)).toBe(1);
    expect(resolveWarmupSteps(0, 0.1, 95)).toBe(10);
    expect(resolveWarmupSteps(3, 0.5, 95)).toBe(3);
  });
});

describe('progress bar', () => {
  it('draws step, loss, lr, tokens/s and ETA on a TTY; stays quiet otherwise', async () => {
    const { createTrainProgress } = await import('./index');
    const out: string[] = [];
    const tty = { isTTY: true, columns: 200, write: (s: string) => void out.push(s) };
    const p = createTrainProgress('auto', tty);
    p.update({ step: 5, total: 10, loss: 1.23456, lr: 2e-4, tokensPerSecond: 1234.4, etaSeconds: 75, epoch: 0.5 });
    p.done();
    expect(out.join('')).toMatch(/5\/10 \| ep 0\.50 \| loss 1\.2346 \| lr 2\.00e-4 \| 1234 tok\/s \| \d+s \| ETA 1m15s/);
    const pipe: string[] = [];
    const q = createTrainProgress('auto', { isTTY: false, write: (s: string) => void pipe.push(s) });
    q.update({ step: 1, total: 2, loss: 1, lr: 1, tokensPerSecond: 1, etaSeconds: 1, epoch: 0 });
    q.message('hello');
    q.done();
    expect(pipe).toEqual([]);
  });
});
