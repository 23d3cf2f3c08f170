import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { perplexity, perplexityOfSequences } from './perplexity';
import { BIGRAM_P, bigramModel } from './fake_models';

// Token sequences over the bigram model's vocabulary and their NLL by hand.
const seqs = [[1, 2, 3], [3, 1], [2], [1, 3, 0, 2, 2]];
const handNll = (s: number[]) => s.slice(1).reduce((acc, y, t) => acc - Math.log(BIGRAM_P[s[t]][y]), 0);

describe('perplexity (HF token-weighted: exp(Σ NLL / predicted tokens))', () => {
  it('equals the hand computation over the whole dataset, across batches and padding', async () => {
    const model = bigramModel();
    const r = await perplexityOfSequences(model, seqs.map((inputIds) => ({ inputIds })), { batchSize: 3, padTokenId: 0 });
    const nll = seqs.reduce((a, s) => a + handNll(s), 0);
    const tokens = seqs.reduce((a, s) => a + Math.max(0, s.length - 1), 0);
    expect(r.tokenCount).toBe(tokens);
    expect(r.nllSum).toBeCloseTo(nll, 5);
    expect(r.perplexity).toBeCloseTo(Math.exp(nll / tokens), 5);
    expect(Math.abs(r.perplexity / Math.exp(nll / tokens) - 1)).toBeLessThan(1e-6);
    // Per sequence, and the single-token sequence predicts nothing.
    expect(r.perSequence[2]).toEqual({ nll: 0, tokens: 0, perplexity: NaN });
    expect(r.perSequence[0].perplexity).toBeCloseTo(Math.exp(handNll(seqs[0]) / 2), 5);
    // Longest first, 3 per batch: two forwards, right-padded with 0.
    expect(model.calls.map((b) => b.length)).toEqual([3, 1]);
    expect(model.calls[0][2]).toEqual([3, 1, 0, 0, 0]);
  });

  it('labels -100 are left out; virtual-token positions in the logits are skipped', async () => {
    const r = await perplexityOfSequences(bigramModel(3), [{ inputIds: [1, 2, 3, 1], labels: [-100, -100, 3, 1] }], { padTokenId: 0 });
    const nll = -Math.log(BIGRAM_P[2][3]) - Math.log(BIGRAM_P[3][1]);
    expect(r.tokenCount).toBe(2);
    expect(r.perplexity).toBeCloseTo(Math.exp(nll / 2), 5);
  });

  it('from texts with a tokenizer; { prompt, text } scores the text only', async () => {
    const tok = { encode: (s: string) => Array.from(s).map(Number), decode: () => '', padTokenId: 0 };
    const full = await perplexity(bigramModel(), tok, ['123', '31']);
    const nll = handNll([1, 2, 3]) + handNll([3, 1]);
    expect(full.perplexity).toBeCloseTo(Math.exp(nll / 3), 5);
    const cond = await perplexity(bigramModel(), tok, [{ prompt: '12', text: '31' }]);
    expect(cond.tokenCount).toBe(2);
    expect(cond.nllSum).toBeCloseTo(-Math.log(BIGRAM_P[2][3]) - Math.log(BIGRAM_P[3][1]), 5);
    const trunc = await perplexity(bigramModel(), tok, ['1231'], { maxLength: 2 });
    expect(trunc.tokenCount).toBe(1);
  });

  it('leaks no tensors and names bad input', async () => {
    const before = tf.memory().numTensors;
    await perplexityOfSequences(bigramModel(), [{ inputIds: [1, 2] }], { padTokenId: 0 });
    expect(tf.memory().numTensors).toBe(before);
    await expect(perplexityOfSequences(bigramModel(), [{ inputIds: [1, 2.5] }], { padTokenId: 0 })).rejects.toThrow(/sequences\[0\]\.inputIds\[1\]/);
    await expect(perplexityOfSequences(bigramModel(), [{ inputIds: [1, 9] }], { padTokenId: 0 })).rejects.toThrow(/labels\[0\]\[1\]: token id 9 is outside the vocabulary of 4/);
  });
});
