// The inference fusions of the LLaMA layer on webgpu (lavapipe in CI): residual add + RMSNorm and
// gate/up/SwiGLU in one dispatch each give the unfused logits and tokens, with fewer dispatches, and are
// not used while gradients are recorded. Skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend, manualSeed, profileGpu } from '@peftjs/core';
import { LlamaForCausalLM, parseModelConfig } from './index';
import type { LlamaConfig } from './config';
import { setDecodeFusions } from './kernels/decode_fused';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch(() => undefined);
const onGpu = report?.backend === 'webgpu' && tf.getBackend() === 'webgpu';

const raw = {
  model_type: 'llama', vocab_size: 301, hidden_size: 48, intermediate_size: 70, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, max_position_embeddings: 128, rms_norm_eps: 1e-5, rope_theta: 10000, hidden_act: 'silu', tie_word_embeddings: true,
};

describe.skipIf(!onGpu)('LLaMA inference fusions (webgpu)', () => {
  manualSeed(3);
  const model = new LlamaForCausalLM(parseModelConfig(raw) as LlamaConfig);
  const ids = [[5, 17, 99, 3, 250, 8, 41]];

  async function logits(fused: boolean) {
    setDecodeFusions(fused);
    try {
      const { result, profile } = await profileGpu(async () => {
        const l = tf.tidy(() => model.forward({ inputIds: ids }).logits);
        const v = await l.data();
        l.dispose();
        return v;
      });
      return { v: result, names: profile.kernels.map((k) => k.name), dispatches: profile.dispatches };
    } finally {
      setDecodeFusions(true);
    }
  }

  it('give the unfused logits with two dispatches fewer per layer', async () => {
    const plain = await logits(false);
    const fused = await logits(true);
    let maxAbs = 0;
    let diff = 0;
    for (let i = 0; i < plain.v.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(plain.v[i]));
      diff = Math.max(diff, Math.abs(plain.v[i] - fused.v[i]));
    }
    expect(diff / maxAbs).toBeLessThan(1e-5);
    expect(fused.names).toEqual(expect.arrayContaining(['DecodeAddRmsNorm', 'DecodeSwiGLUMatvec']));
    // per layer: add + norm → 1, gate + up + SwiGLU → 1
    expect(fused.dispatches).toBe(plain.dispatches - 3 * raw.num_hidden_layers);
  });

  it('give the same greedy tokens', async () => {
    setDecodeFusions(false);
    const a = await model.generate({ inputIds: ids, maxNewTokens: 6, eosTokenId: -1 });
    setDecodeFusions(true);
    const b = await model.generate({ inputIds: ids, maxNewTokens: 6, eosTokenId: -1 });
    expect(b).toEqual(a);
  });

  it('are not used while gradients are recorded, and leak nothing', async () => {
    const before = tf.memory().numTensors;
    const { profile } = await profileGpu(async () => {
      const w = model.namedParameters().next().value![1] as tf.Variable;
      const { value, grads } = tf.variableGrads(() => tf.sum(model.forward({ inputIds: ids }).logits) as tf.Scalar, [w]);
      await value.data();
      tf.dispose([value, ...Object.values(grads)]);
    });
    expect(profile.kernels.map((k) => k.name).some((n) => n.startsWith('Decode'))).toBe(false);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('generate on webgpu equals the cpu backend at head_dim 12 (the slab decode kernel without its RoPE variant)', async () => {
    const gen = async () => {
      manualSeed(11);
      const m = new LlamaForCausalLM(parseModelConfig(raw) as LlamaConfig);
      const out = await m.generate({ inputIds: [[7, 8, 9, 10], [1, 2, 3, 4]], maxNewTokens: 8, eosTokenId: -1 });
      for (const [, p] of m.namedParameters()) p.dispose();
      return out;
    };
    const gpu = await gen();
    await tf.setBackend('cpu');
    try {
      expect(gpu).toEqual(await gen());
    } finally {
      await tf.setBackend('webgpu');
    }
  });
});
