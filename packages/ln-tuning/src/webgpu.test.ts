// LN tuning on the WebGPU backend (Dawn through the `webgpu` package; Mesa's lavapipe in CI): HF parity on the
// fixture (adapted, merged) and a training step with no synchronous read. Skipped without a WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { initBackend, loadSafetensors, getPeftModel, PeftModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LNTuningConfig } from './index';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const why = available ? '' : (report as Error).message;
const ROOT = process.env.PEFTJS_FIXTURES_HF2 ? process.env.PEFTJS_FIXTURES_HF2.replace(/\/?$/, '/') : fileURLToPath(new URL('../fixtures/', import.meta.url));
const dir = `${ROOT}llama_ln_tuning/`;

/** Max |a − b| over kept positions relative to max |b| there, read asynchronously. */
async function keptRel(a: tf.Tensor, b: Float32Array, mask: number[][]): Promise<number> {
  const got = (await a.data()) as Float32Array;
  const [B, T, V] = a.shape as number[];
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < B; i++) for (let t = 0; t < T; t++) {
    if (!mask[i][t]) continue;
    for (let v = 0; v < V; v++) {
      const k = (i * T + t) * V + v;
      diff = Math.max(diff, Math.abs(got[k] - b[k]));
      scale = Math.max(scale, Math.abs(b[k]));
    }
  }
  return diff / scale;
}

describe.skipIf(!available)(`LN tuning on WebGPU ${available ? '' : `(skipped: ${why})`}`, () => {
  it('adapted and merged logits match HF', async () => {
    expect(tf.getBackend()).toBe('webgpu');
    const t = await loadSafetensors(`${dir}tensors.safetensors`);
    const inputIds = (await t.input_ids.array()) as number[][];
    const attentionMask = (await t.attention_mask.array()) as number[][];
    const adaptedRef = (await t.logits_adapted.data()) as Float32Array;
    const mergedRef = (await t.logits_merged.data()) as Float32Array;
    tf.dispose(Object.values(t));
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter`);
    const a = peft.forward({ inputIds, attentionMask }).logits;
    const rel = await keptRel(a, adaptedRef, attentionMask);
    console.log(`llama_ln_tuning on webgpu: adapted rel ${rel.toExponential(2)}`);
    expect(rel).toBeLessThan(1e-4);
    const merged = peft.mergeAndUnload();
    const m = merged.forward({ inputIds, attentionMask }).logits;
    expect(await keptRel(m, mergedRef, attentionMask)).toBeLessThan(1e-4);
    tf.dispose([a, m]);
  });

  it('a training step trains the copies; no leaks', async () => {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(`${dir}base`), new LNTuningConfig({ targetModules: ['norm'] }));
    peft.train();
    const batch = { inputIds: [[5, 6, 7, 8, 9]], labels: [[5, 6, 7, 8, 9]] };
    const copy = peft.model.getParameter('model.norm.ln_tuning_layers.default.weight');
    const before = await copy.data();
    const opt = tf.train.sgd(0.1);
    const step = async () => {
      const loss = opt.minimize(() => peft.forward(batch).loss!, true, peft.trainableParameters())!;
      await loss.data();
      loss.dispose();
    };
    await step();
    expect(Array.from(await copy.data())).not.toEqual(Array.from(before));
    expect(Array.from(await peft.model.getParameter('model.norm.base_layer.weight').data())).toEqual(Array.from(before));
    const n0 = tf.memory().numTensors;
    await step();
    expect(tf.memory().numTensors).toBe(n0);
    opt.dispose();
  });
});
