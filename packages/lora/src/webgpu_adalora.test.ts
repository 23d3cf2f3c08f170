// AdaLoRA on the WebGPU backend (Dawn through the `webgpu` package; Mesa's lavapipe in CI): HF's forward, and
// the Trainer's lazy path (losses and norms left on the device, the update gated by a device flag) running the
// rank allocator: HF's losses and non-zero ranks at every step. Without any WebGPU adapter the suite is skipped.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, PeftModel, parseSafetensors, rawToArray } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { Trainer, type Example } from '@peftjs/trainer';
import type { AdaLoraConfig } from './index';
import './index';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const why = available ? '' : (report as Error).message;
const ROOT = process.env.PEFTJS_FIXTURES_HF2 ? process.env.PEFTJS_FIXTURES_HF2.replace(/\/?$/, '/') : fileURLToPath(new URL('../fixtures/', import.meta.url));

function load(path: string) {
  const file = parseSafetensors(new Uint8Array(readFileSync(path)));
  const rows = (k: string) => {
    const t = file.tensors[k];
    const v = Array.from(rawToArray(t));
    return Array.from({ length: t.shape[0] }, (_, i) => v.slice(i * t.shape[1], (i + 1) * t.shape[1]));
  };
  return { file, rows };
}

async function maxRelKept(values: Float32Array | ArrayLike<number>, ref: ArrayLike<number>, mask: number[][], vocab: number): Promise<number> {
  let d = 0;
  let s = 0;
  const T = mask[0].length;
  for (let b = 0; b < mask.length; b++) {
    for (let t = 0; t < T; t++) {
      if (!mask[b][t]) continue;
      for (let v = 0; v < vocab; v++) {
        const i = (b * T + t) * vocab + v;
        d = Math.max(d, Math.abs(values[i] - ref[i]));
        s = Math.max(s, Math.abs(ref[i]));
      }
    }
  }
  return d / s;
}

describe.skipIf(!available)(`AdaLoRA on WebGPU ${available ? '' : `(skipped: ${why})`}`, () => {
  it('adapted and merged logits match HF', async () => {
    const dir = `${ROOT}llama_adalora/`;
    const { file, rows } = load(`${dir}tensors.safetensors`);
    const inputIds = rows('input_ids');
    const attentionMask = rows('attention_mask');
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter`);
    const adapted = peft.forward({ inputIds, attentionMask }).logits;
    const a = await adapted.data();
    adapted.dispose();
    expect(await maxRelKept(a, rawToArray(file.tensors.logits_adapted), attentionMask, 300)).toBeLessThan(1e-4);
    const merged = peft.mergeAndUnload();
    const m = merged.forward({ inputIds, attentionMask }).logits;
    const mv = await m.data();
    m.dispose();
    expect(await maxRelKept(mv, rawToArray(file.tensors.logits_merged), attentionMask, 300)).toBeLessThan(1e-4);
    merged.dispose();
  });

  it("the Trainer's lazy path with the rank allocator reproduces HF's losses and ranks", async () => {
    expect(tf.getBackend()).toBe('webgpu');
    const dir = `${ROOT}llama_adalora_train/`;
    const { file, rows } = load(`${dir}tensors.safetensors`);
    const ids = rows('input_ids');
    const mask = rows('attention_mask');
    const labels = rows('labels');
    const losses = Array.from(rawToArray(file.tensors.losses));
    const ranks = Array.from(rawToArray(file.tensors.nonzero_ranks));
    const dataset: Example[] = ids.map((r, i) => ({ inputIds: r, attentionMask: mask[i], labels: labels[i] }));
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter_init`, { isTrainable: true });
    const es = [...peft.namedParameters()].filter(([k]) => k.includes('.lora_E.')).map(([, p]) => p);
    const ourRanks: number[] = [];
    const out = mkdtempSync(join(tmpdir(), 'peftjs-adalora-webgpu-'));
    const trainer = new Trainer({
      model: peft,
      args: { outputDir: out, learningRate: 1e-2, weightDecay: 0, lrSchedulerType: 'constant', maxGradNorm: 0, maxSteps: 12, perDeviceTrainBatchSize: 2, shuffle: false, loggingSteps: 1, saveStrategy: 'no', progressBar: false },
      trainDataset: dataset,
      callbacks: [
        {
          onStepEnd: async () => {
            const n = tf.tidy(() => tf.addN(es.map((e) => tf.sum(tf.notEqual(e, 0).cast('int32')))));
            ourRanks.push((await n.data())[0]);
            n.dispose();
          },
        },
      ],
    });
    await trainer.train();
    rmSync(out, { recursive: true, force: true });
    const logs = trainer.state.logHistory.filter((e) => e.loss !== undefined && e.learningRate !== undefined);
    expect(ourRanks).toEqual(ranks);
    for (let s = 0; s < 12; s++) expect(Math.abs(logs[s].loss! - losses[s]) / losses[s], `step ${s}`).toBeLessThan(1e-4);
    expect((peft.peftConfig.default as AdaLoraConfig).rankPattern).toEqual(JSON.parse(readFileSync(`${dir}adapter_final/adapter_config.json`, 'utf8')).rank_pattern);
    trainer.optimizer?.dispose();
    peft.dispose();
  });
});
