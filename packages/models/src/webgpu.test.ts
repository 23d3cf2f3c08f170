// The same parity checks on the webgpu backend (Dawn; lavapipe in CI), skipped where there is no WebGPU.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { initBackend } from '@peftjs/core';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '@peftjs/models';
import { HF, caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch(() => undefined);
const onGpu = report?.backend === 'webgpu' && tf.getBackend() === 'webgpu';
const ref = JSON.parse(readFileSync(fileURLToPath(new URL('../test-data/hf_reference.json', import.meta.url)), 'utf8'));

describe.skipIf(!onGpu)('webgpu backend', () => {
  for (const name of ['llama_lora_qv', 'qwen2_lora', 'gpt2_lora_cattn', 'llama_bf16_weights']) {
    it(`${name}: logits match HF; greedy generate matches HF; no leaks`, async () => {
      const model = await AutoModelForCausalLM.fromPretrained(`${hfCase(name)}base`);
      const t = await caseTensors(name);
      const before = tf.memory().numTensors;
      const { logits } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
      const r = await keptDiff(logits, t.logits_base, t.attention_mask);
      console.log(`webgpu ${name}: max relative logits difference ${r.rel.toExponential(2)}`);
      expect(r.rel).toBeLessThanOrEqual(1e-4);
      logits.dispose();
      expect(tf.memory().numTensors).toBe(before);
      const g = ref.generate[name];
      if (g && !process.env.PEFTJS_FIXTURES_HF) {
        const out = await model.generate({ inputIds: g.input_ids, attentionMask: g.attention_mask, maxNewTokens: g.max_new_tokens, eosTokenId: [], padTokenId: 0 });
        expect(out).toEqual(g.generated);
        expect(tf.memory().numTensors).toBe(before);
      }
      tf.dispose(Object.values(t));
      model.dispose();
    });
  }

  it('llama_seqcls_lora: logits match HF', async () => {
    const model = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_lora')}base`);
    const t = await caseTensors('llama_seqcls_lora');
    const { logits } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
    expect((await keptDiff(logits, t.logits_base)).rel).toBeLessThanOrEqual(1e-4);
    tf.dispose([logits, ...Object.values(t)]);
    model.dispose();
  });

  it('the LLaMA forward, backward and cached decode run the flash-attention and RoPE kernels', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(`${HF}llama_lora_qv/base`);
    const q = model.getParameter('model.layers.0.self_attn.q_proj.weight');
    const names = async (f: () => tf.TensorContainer) => {
      const info = await tf.profile(f);
      tf.dispose(info.result as tf.TensorContainer);
      return info.kernelNames;
    };
    const train = await names(() => {
      const { value, grads } = tf.variableGrads(() => {
        const out = model.forward({ inputIds: [[1, 2, 3, 4], [5, 6, 7, 8]], attentionMask: [[0, 1, 1, 1], [1, 1, 1, 1]], labels: [[1, 2, 3, 4], [5, 6, 7, 8]] });
        out.logits.dispose();
        return out.loss!;
      }, [q]);
      return [value, ...Object.values(grads)];
    });
    expect(train.some((n) => n.startsWith('peftjs.Attention'))).toBe(true);
    expect(train.some((n) => n.startsWith('peftjs.Rope'))).toBe(true);
    // the attention gradient is the flash backward's, not tfjs's softmax / matMul gradient
    expect(train).not.toContain('Softmax');
    const decode = await names(() => model.generate({ inputIds: [[1, 2, 3]], maxNewTokens: 2, eosTokenId: [] }) as unknown as tf.TensorContainer);
    expect(decode.some((n) => n.startsWith('peftjs.Attention'))).toBe(true);
    model.dispose();
  });

  it('loss and gradients run (no rank-5 tensors, no sync reads)', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(`${HF}llama_lora_qv/base`);
    const q = model.getParameter('model.layers.0.self_attn.q_proj.weight');
    const { value, grads } = tf.variableGrads(() => {
      const out = model.forward({ inputIds: [[1, 2, 3, 4]], attentionMask: [[0, 1, 1, 1]], labels: [[1, 2, 3, 4]] });
      out.logits.dispose();
      return out.loss!;
    }, [q]);
    expect(Number.isFinite((await value.data())[0])).toBe(true);
    expect((await grads[q.name].data()).every(Number.isFinite)).toBe(true);
    tf.dispose([value, ...Object.values(grads)]);
    model.dispose();
  });
});
