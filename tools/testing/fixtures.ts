// Shared helpers for tests that compare against the committed reference fixtures.
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { loadSafetensors, parseSafetensors, rawToArray, type SafetensorsFile } from '@peftjs/core';

export const FIXTURES = fileURLToPath(new URL('../../fixtures/', import.meta.url));
export const HF = `${FIXTURES}hf-peft/`;

/** `fixtures/hf-peft/<name>/`; the acceptance run may point PEFTJS_FIXTURES_HF at fixtures of other shapes. */
export function hfCase(name: string): string {
  const root = process.env.PEFTJS_FIXTURES_HF ? process.env.PEFTJS_FIXTURES_HF.replace(/\/?$/, '/') : HF;
  return `${root}${name}/`;
}

/**
 * A training-trajectory case (llama_lora_train, …_sched): its tensors file, the batch rows as number[][],
 * the per-step losses HF recorded, and the rows as Trainer examples.
 */
export function trajectoryCase(dir: string): {
  file: SafetensorsFile;
  losses: number[];
  dataset: { inputIds: number[]; attentionMask: number[]; labels: number[] }[];
} {
  const file = parseSafetensors(new Uint8Array(readFileSync(`${dir}tensors.safetensors`)));
  const rows = (k: string) => {
    const t = file.tensors[k];
    const v = Array.from(rawToArray(t));
    const [b, n] = t.shape;
    return Array.from({ length: b }, (_, i) => v.slice(i * n, (i + 1) * n));
  };
  const ids = rows('input_ids');
  const mask = rows('attention_mask');
  const labels = rows('labels');
  return { file, losses: Array.from(rawToArray(file.tensors.losses)), dataset: ids.map((r, i) => ({ inputIds: r, attentionMask: mask[i], labels: labels[i] })) };
}

export async function caseTensors(name: string): Promise<Record<string, tf.Tensor>> {
  return loadSafetensors(`${hfCase(name)}tensors.safetensors`);
}

/**
 * Max |a - b| over the positions the attention mask keeps, and the reference's max |b| there.
 * a, b: [B, T, V] (or [B, C]); mask [B, T] (1 = kept). The parity criterion is diff ≤ 1e-4 · scale.
 */
export async function keptDiff(a: tf.Tensor, b: tf.Tensor, mask?: tf.Tensor): Promise<{ diff: number; scale: number; rel: number }> {
  if (a.shape.join() !== b.shape.join()) throw new Error(`shape [${a.shape}] vs reference [${b.shape}]`);
  const [d, s] = tf.tidy(() => {
    let keep: tf.Tensor = tf.onesLike(b);
    if (mask && b.rank === 3) keep = tf.mul(keep, mask.toFloat().expandDims(-1));
    const diff = tf.max(tf.mul(tf.abs(tf.sub(a, b)), keep));
    const scale = tf.max(tf.mul(tf.abs(b), keep));
    return [diff, scale];
  });
  const diff = (await d.data())[0];
  const scale = (await s.data())[0];
  tf.dispose([d, s]);
  return { diff, scale, rel: diff / scale };
}
