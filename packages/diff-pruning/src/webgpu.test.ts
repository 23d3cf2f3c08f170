// Diff pruning on the WebGPU backend (Dawn through the `webgpu` package; Mesa's lavapipe in CI): identity at
// init, gated training steps that move only the diff, the projection (topk, scatter) to an exact count,
// safeMerge equal to the adapted logits, save → load exact, no synchronous read, flat memory.
// Skipped without a WebGPU adapter.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, getPeftModel, PeftModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { DiffPruningConfig, keptCount, projectDiffPruning } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const why = available ? '' : (report as Error).message;
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-diff-pruning-webgpu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  tf.dispose([d, a, b]);
  return v;
}

describe.skipIf(!available)(`diff pruning on WebGPU ${available ? '' : `(skipped: ${why})`}`, () => {
  it('identity at init; steps train only the diff; projection exact; merge = adapted; save → load exact; no leaks', async () => {
    expect(tf.getBackend()).toBe('webgpu');
    const LLAMA = `${hfCase('llama_lora_qv')}base`;
    const model = await AutoModelForCausalLM.fromPretrained(LLAMA);
    const ids = [[3, 4, 5, 6, 7]];
    const before = model.forward({ inputIds: ids }).logits;
    const peft = getPeftModel(model, new DiffPruningConfig({ targetModules: ['q_proj', 'down_proj'], density: 0.05 }));
    expect(await maxAbsDiff(before, peft.forward({ inputIds: ids }).logits)).toBe(0);
    const q = 'model.layers.0.self_attn.q_proj';
    const w0 = Array.from(await peft.model.getParameter(`${q}.base_layer.weight`).data());
    const opt = tf.train.adam(1e-2);
    const step = async () => {
      const loss = opt.minimize(() => peft.forward({ inputIds: ids, labels: ids }).loss!, true, peft.trainableParameters())!;
      await loss.data();
      loss.dispose();
    };
    peft.train();
    await step();
    const n0 = tf.memory().numTensors;
    await step();
    expect(tf.memory().numTensors).toBe(n0);
    expect(Array.from(await peft.model.getParameter(`${q}.base_layer.weight`).data())).toEqual(w0);
    const delta = await peft.model.getParameter(`${q}.diff_pruning_delta.default.weight`).data();
    expect(delta.some((v) => v !== 0)).toBe(true);
    opt.dispose();
    peft.eval();
    const kept = projectDiffPruning(peft);
    expect(kept).toBe(2 * (keptCount(0.05, 32 * 32) + keptCount(0.05, 72 * 32)));
    const adapted = peft.forward({ inputIds: ids }).logits;
    const out = join(tmp, 'a');
    await peft.savePretrained(out);
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), out);
    expect(await maxAbsDiff(again.forward({ inputIds: ids }).logits, adapted.clone())).toBe(0);
    await peft.mergeAdapter(undefined, { safeMerge: true });
    expect(await maxAbsDiff(peft.forward({ inputIds: ids }).logits, adapted)).toBe(0);
  });
});
