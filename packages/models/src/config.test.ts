import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { KVCache, manualSeed } from '@peftjs/core';
import { AutoModelForCausalLM, parseModelConfig, ropeInvFreq, type LlamaConfig } from '@peftjs/models';
import { maxAbsDiff } from './test-helpers';

const base = { model_type: 'llama', vocab_size: 50, hidden_size: 32, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4 };

describe('config normalization', () => {
  it('fills HF defaults and reads rope_theta from either place', () => {
    const c = parseModelConfig(base) as LlamaConfig;
    expect(c.numKeyValueHeads).toBe(4);
    expect(c.headDim).toBe(8);
    expect(c.rope.theta).toBe(10000);
    expect(c.tieWordEmbeddings).toBe(false);
    expect(c.rmsNormEps).toBe(1e-6);
    expect((parseModelConfig({ ...base, rope_theta: 500000 }) as LlamaConfig).rope.theta).toBe(500000);
    expect((parseModelConfig({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }) as LlamaConfig).rope.theta).toBe(1e6);
    const q = parseModelConfig({ ...base, model_type: 'qwen2', attention_bias: false }) as LlamaConfig;
    expect([q.qkvBias, q.oBias]).toEqual([true, false]);
    const g = parseModelConfig({ model_type: 'gpt2', vocab_size: 10, n_embd: 8, n_layer: 1, n_head: 2 });
    expect(g.tieWordEmbeddings).toBe(true);
    expect(g.headDim).toBe(4);
  });

  it('llama3 and linear RoPE scaling change only the inverse frequencies they should', () => {
    const spec = { type: 'default' as const, theta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const plain = ropeInvFreq(spec, 64);
    const lin = ropeInvFreq({ ...spec, type: 'linear' }, 64);
    const l3 = ropeInvFreq({ ...spec, type: 'llama3' }, 64);
    for (let i = 0; i < 32; i++) {
      expect(lin[i]).toBeCloseTo(plain[i] / 8, 12);
      const wave = (2 * Math.PI) / plain[i];
      if (wave < 8192 / 4) expect(l3[i]).toBe(plain[i]); // high frequencies kept
      if (wave > 8192) expect(l3[i]).toBeCloseTo(plain[i] / 8, 12); // low frequencies scaled
      expect(l3[i]).toBeLessThanOrEqual(plain[i]);
    }
  });
});

describe('attention shapes', () => {
  for (const [label, extra] of [
    ['head_dim larger than hidden / heads', { head_dim: 16, num_key_value_heads: 2 }],
    ['multi-query (one kv head)', { num_key_value_heads: 1 }],
    ['no grouping (kv heads = heads), attention and MLP biases', { num_key_value_heads: 4, attention_bias: true, mlp_bias: true }],
  ] as const) {
    it(`${label}: shapes, and KV-cache decoding equals the full forward`, async () => {
      manualSeed(5);
      const m = AutoModelForCausalLM.fromConfig({ ...base, ...extra });
      const c = m.config;
      expect(m.getParameter('model.layers.0.self_attn.q_proj.weight').shape).toEqual([c.numAttentionHeads * c.headDim, 32]);
      expect(m.getParameter('model.layers.0.self_attn.o_proj.weight').shape).toEqual([32, c.numAttentionHeads * c.headDim]);
      expect(m.getParameter('model.layers.0.self_attn.v_proj.weight').shape).toEqual([c.numKeyValueHeads * c.headDim, 32]);
      const ids = [[3, 9, 4, 7, 1, 2], [5, 6, 8, 10, 11, 12]];
      const mask = [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]];
      const full = m.forward({ inputIds: ids, attentionMask: mask }).logits;
      const cache = new KVCache();
      const a = m.forward({ inputIds: ids.map((r) => r.slice(0, 3)), attentionMask: mask.map((r) => r.slice(0, 3)), pastKeyValues: cache, useCache: true }).logits;
      const b = m.forward({ inputIds: ids.map((r) => r.slice(3)), attentionMask: mask, pastKeyValues: cache, useCache: true }).logits;
      expect(cache.keys[1]!.shape).toEqual([2, c.numKeyValueHeads, 6, c.headDim]);
      expect(await maxAbsDiff(tf.concat([a, b], 1), full)).toBeLessThan(1e-5);
      cache.dispose();
      tf.dispose([full, a, b]);
      m.dispose();
    });
  }
});
