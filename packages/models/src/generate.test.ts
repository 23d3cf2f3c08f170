import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { ForwardInputs } from '@peftjs/core';
import { AutoModelForCausalLM, positionsFromMask, sampleToken, type CausalLMBase } from '@peftjs/models';
import { mulberry32 } from '@peftjs/core';
import { hfCase } from '../../../tools/testing/fixtures';

/** Greedy continuation by full forwards without a cache: the reference for generate's cached loop. */
async function greedyNoCache(model: CausalLMBase, prompt: number[], n: number): Promise<number[]> {
  const ids = prompt.slice();
  for (let i = 0; i < n; i++) {
    const { logits } = model.forward({ inputIds: [ids] });
    const next = tf.tidy(() => tf.argMax(tf.slice(logits, [0, ids.length - 1, 0], [1, 1, -1]).reshape([-1])));
    ids.push((await next.data())[0]);
    tf.dispose([logits, next]);
  }
  return ids;
}

describe('generate', () => {
  const models: Record<string, CausalLMBase> = {};
  beforeAll(async () => {
    models.llama = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    models.gpt2 = await AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
    models.qwen2 = await AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
  });
  afterAll(() => Object.values(models).forEach((m) => m.dispose()));

  for (const key of ['llama', 'gpt2', 'qwen2']) {
    it(`${key}: greedy is deterministic and equals argmax over full forwards (cache is exact)`, async () => {
      const m = models[key];
      const prompt = [5, 17, 42, 99, 3];
      const a = await m.generate({ inputIds: [prompt], maxNewTokens: 8, eosTokenId: [] });
      const b = await m.generate({ inputIds: [prompt], maxNewTokens: 8, eosTokenId: [] });
      expect(a).toEqual(b);
      expect(a[0].slice(0, 5)).toEqual(prompt);
      expect(a[0]).toHaveLength(13);
      expect(a[0]).toEqual(await greedyNoCache(m, prompt, 8));
    });

    it(`${key}: a left-padded batch generates what each row generates alone`, async () => {
      const m = models[key];
      const rows = [[5, 17, 42, 99, 3, 8], [120, 7, 64], [9, 9, 200, 31]];
      const width = 6;
      const pad = 0;
      const inputIds = rows.map((r) => [...new Array(width - r.length).fill(pad), ...r]);
      const attentionMask = rows.map((r) => [...new Array(width - r.length).fill(0), ...r.map(() => 1)]);
      const batch = await m.generate({ inputIds, attentionMask, maxNewTokens: 6, eosTokenId: [], padTokenId: pad });
      for (let i = 0; i < rows.length; i++) {
        const alone = await m.generate({ inputIds: [rows[i]], maxNewTokens: 6, eosTokenId: [] });
        expect(batch[i].slice(width)).toEqual(alone[0].slice(rows[i].length));
        expect(batch[i].slice(0, width)).toEqual(inputIds[i]);
      }
    });
  }

  it('accepts int32 tensors as inputs and derives the mask from the pad token when none is given', async () => {
    const m = models.llama;
    const ids = [[0, 0, 5, 17, 42], [1, 2, 3, 4, 5]];
    const withMask = await m.generate({ inputIds: ids, attentionMask: [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], maxNewTokens: 4, padTokenId: 0, eosTokenId: [] });
    const t = tf.tensor2d(ids, undefined, 'int32');
    const derived = await m.generate({ inputIds: t, maxNewTokens: 4, padTokenId: 0, eosTokenId: [] });
    expect(derived).toEqual(withMask);
    t.dispose();
  });

  it('eos stops a row; finished rows are padded; the loop ends when every row is done', async () => {
    const m = models.llama;
    const prompts = [[5, 17, 42, 99, 3], [120, 7, 64, 1, 2]];
    const free = await m.generate({ inputIds: prompts, maxNewTokens: 6, eosTokenId: [] });
    const eos = free[0][5 + 1]; // row 0's second new token
    const out = await m.generate({ inputIds: prompts, maxNewTokens: 6, eosTokenId: eos, padTokenId: 299 });
    const firstEos = free[0].indexOf(eos, 5);
    expect(out[0].slice(0, firstEos + 1)).toEqual(free[0].slice(0, firstEos + 1));
    expect(out[0].slice(firstEos + 1).every((x) => x === 299)).toBe(true);
    const row1Eos = free[1].indexOf(eos, 5);
    if (row1Eos < 0) expect(out[1]).toEqual(free[1]);
    // both rows ending early shortens the output
    const both = await m.generate({ inputIds: [prompts[0]], maxNewTokens: 6, eosTokenId: eos });
    expect(both[0]).toEqual(free[0].slice(0, firstEos + 1));
  });

  it('uses the config / generation_config eos by default', async () => {
    const m = models.llama; // eos_token_id 2 in generation_config.json
    expect(m.generationDefaults.eosTokenId).toBe(2);
    const out = await m.generate({ inputIds: [[5, 17, 42]], maxNewTokens: 3 });
    expect(out[0].length).toBeLessThanOrEqual(6);
  });

  it('sampling is reproducible from the seed; top-k 1 is greedy', async () => {
    const m = models.llama;
    const opts = { inputIds: [[5, 17, 42, 99, 3], [1, 2, 3, 4, 5]], maxNewTokens: 10, doSample: true, temperature: 1.5, eosTokenId: [] };
    const a = await m.generate({ ...opts, seed: 7 });
    const b = await m.generate({ ...opts, seed: 7 });
    const c = await m.generate({ ...opts, seed: 8 });
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    const greedy = await m.generate({ inputIds: opts.inputIds, maxNewTokens: 10, eosTokenId: [] });
    expect(await m.generate({ ...opts, topK: 1, seed: 3 })).toEqual(greedy);
    expect(await m.generate({ ...opts, topP: 1e-6, seed: 3 })).toEqual(greedy);
  });

  it('a replacement forward is called with ids, mask, positions, cache and useCache', async () => {
    const m = models.llama;
    const seen: ForwardInputs[] = [];
    const out = await m.generate({ inputIds: [[0, 5, 6]], attentionMask: [[0, 1, 1]], maxNewTokens: 3, eosTokenId: [] }, (inputs) => {
      seen.push(inputs);
      return m.forward(inputs);
    });
    expect(seen).toHaveLength(3);
    expect(seen[0].inputIds).toEqual([[0, 5, 6]]);
    expect(seen[0].attentionMask).toEqual([[0, 1, 1]]);
    expect(seen[2].attentionMask).toEqual([[0, 1, 1, 1, 1]]);
    expect(seen[0].positionIds).toEqual([[1, 0, 1]]);
    expect(seen[1].inputIds).toEqual([[out[0][3]]]);
    expect(seen[1].positionIds).toEqual([[2]]);
    expect(seen[2].positionIds).toEqual([[3]]);
    expect(seen[0].useCache).toBe(true);
    expect(seen[0].pastKeyValues).toBeDefined();
    expect(out).toEqual(await m.generate({ inputIds: [[0, 5, 6]], attentionMask: [[0, 1, 1]], maxNewTokens: 3, eosTokenId: [] }));
  });

  it('no tensor leaks across generate (greedy and sampled)', async () => {
    for (const m of Object.values(models)) {
      await m.generate({ inputIds: [[1, 2, 3]], maxNewTokens: 2 });
      const before = tf.memory().numTensors;
      await m.generate({ inputIds: [[0, 1, 2, 3], [4, 5, 6, 7]], attentionMask: [[0, 1, 1, 1], [1, 1, 1, 1]], maxNewTokens: 5, eosTokenId: [] });
      await m.generate({ inputIds: [[1, 2, 3]], maxNewTokens: 5, doSample: true, topK: 5, topP: 0.9, seed: 1 });
      expect(tf.memory().numTensors).toBe(before);
    }
  });
});

describe('generation helpers', () => {
  it('positionsFromMask follows HF: cumsum - 1, masked positions 1', () => {
    expect(positionsFromMask([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], 5)).toEqual([[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]]);
    expect(positionsFromMask([[0, 1, 1, 1]], 1)).toEqual([[2]]);
  });

  it('sampleToken: top-k keeps the k best; top-p keeps the smallest set with mass ≥ p', () => {
    const rand = mulberry32(1);
    const logits = () => Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    const counts = (o: { topK: number; topP: number }) => {
      const c = [0, 0, 0, 0];
      for (let i = 0; i < 4000; i++) c[sampleToken(logits(), { temperature: 1, ...o }, rand)]++;
      return c;
    };
    const k2 = counts({ topK: 2, topP: 1 });
    expect(k2[2] + k2[3]).toBe(0);
    expect(Math.abs(k2[0] / 4000 - 0.625)).toBeLessThan(0.04);
    const p = counts({ topK: 0, topP: 0.75 }); // drops tokens whose lowest-first mass ≤ 0.25: 0.05, 0.15
    expect(p[2] + p[3]).toBe(0);
    const p2 = counts({ topK: 0, topP: 0.9 }); // 0.05 ≤ 0.1 dropped; 0.2 > 0.1 kept
    expect(p2[3]).toBe(0);
    expect(p2[2]).toBeGreaterThan(0);
    const all = counts({ topK: 0, topP: 1 });
    expect(Math.abs(all[3] / 4000 - 0.05)).toBeLessThan(0.02);
  });
});
