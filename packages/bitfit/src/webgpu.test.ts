// BitFit on the WebGPU backend (Dawn through the `webgpu` package; Mesa's lavapipe in CI): identity at init,
// a training step that changes only the biases, safeMerge (an asynchronous check), no synchronous read.
// Skipped without a WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend, getPeftModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { BitFitConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const why = available ? '' : (report as Error).message;

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  tf.dispose([d, a, b]);
  return v;
}

describe.skipIf(!available)(`BitFit on WebGPU ${available ? '' : `(skipped: ${why})`}`, () => {
  it('identity at init; a step trains only the biases; safeMerge puts them in bit for bit; no leaks', async () => {
    expect(tf.getBackend()).toBe('webgpu');
    const model = await AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
    const ids = [[3, 4, 5, 6, 7]];
    const before = model.forward({ inputIds: ids }).logits;
    const peft = getPeftModel(model, new BitFitConfig());
    expect(await maxAbsDiff(before, peft.forward({ inputIds: ids }).logits)).toBe(0);
    peft.train();
    const q = 'model.layers.0.self_attn.q_proj';
    const w0 = Array.from(await peft.model.getParameter(`${q}.base_layer.weight`).data());
    const b0 = Array.from(await peft.model.getParameter(`${q}.base_layer.bias`).data());
    const opt = tf.train.sgd(0.5);
    const step = async () => {
      const loss = opt.minimize(() => peft.forward({ inputIds: ids, labels: ids }).loss!, true, peft.trainableParameters())!;
      await loss.data();
      loss.dispose();
    };
    await step();
    const trained = Array.from(await peft.model.getParameter(`${q}.bitfit_bias.default`).data());
    expect(trained).not.toEqual(b0);
    expect(Array.from(await peft.model.getParameter(`${q}.base_layer.weight`).data())).toEqual(w0);
    expect(Array.from(await peft.model.getParameter(`${q}.base_layer.bias`).data())).toEqual(b0);
    const n0 = tf.memory().numTensors;
    await step();
    expect(tf.memory().numTensors).toBe(n0);
    peft.eval();
    const adapted = peft.forward({ inputIds: ids }).logits;
    const last = Array.from(await peft.model.getParameter(`${q}.bitfit_bias.default`).data());
    await peft.mergeAdapter(undefined, { safeMerge: true });
    expect(Array.from(await peft.model.getParameter(`${q}.base_layer.bias`).data())).toEqual(last);
    expect(await maxAbsDiff(peft.forward({ inputIds: ids }).logits, adapted)).toBe(0);
    opt.dispose();
  });
});
