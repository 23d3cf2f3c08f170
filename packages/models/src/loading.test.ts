import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { parseSafetensors, rawToArray, serializeSafetensors, type TensorToWrite } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';
import { folderInMemory, memoryFs, maxAbsDiff } from './test-helpers';

/** float32 → IEEE half (round to nearest even), for writing an F16 checkpoint. */
function toF16(x: Float64Array): Uint16Array {
  const out = new Uint16Array(x.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < x.length; i++) {
    f[0] = x[i];
    const b = u[0];
    const sign = (b >>> 16) & 0x8000;
    const exp = ((b >>> 23) & 0xff) - 127 + 15;
    let mant = b & 0x7fffff;
    if (exp <= 0) {
      // subnormal half
      if (exp < -10) out[i] = sign;
      else {
        mant |= 0x800000;
        const shift = 14 - exp;
        let h = mant >>> shift;
        const rem = mant & ((1 << shift) - 1);
        const half = 1 << (shift - 1);
        if (rem > half || (rem === half && h & 1)) h++;
        out[i] = sign | h;
      }
    } else if (exp >= 31) out[i] = sign | 0x7c00;
    else {
      let h = (exp << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
      out[i] = sign | h;
    }
  }
  return out;
}

async function baseLogits(name: string) {
  const m = await AutoModelForCausalLM.fromPretrained(`${hfCase(name)}base`);
  const t = await caseTensors(name);
  const { logits } = m.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
  m.dispose();
  return { logits, t };
}

describe('checkpoint layouts', () => {
  it('a sharded checkpoint (model.safetensors.index.json) with an F16 shard', async () => {
    const { files, dir } = folderInMemory(`${hfCase('llama_lora_qv')}base`);
    const file = parseSafetensors(files.get(`${dir}/model.safetensors`)!);
    files.delete(`${dir}/model.safetensors`);
    const names = Object.keys(file.tensors).sort();
    const shards: Record<string, TensorToWrite>[] = [{}, {}];
    const weightMap: Record<string, string> = {};
    names.forEach((n, i) => {
      const raw = file.tensors[n];
      const k = i % 2;
      const vals = rawToArray(raw);
      shards[k][n] = k === 0 ? { dtype: 'F16', shape: raw.shape, data: toF16(vals) } : { dtype: 'F32', shape: raw.shape, data: Float32Array.from(vals) };
      weightMap[n] = `model-0000${k + 1}-of-00002.safetensors`;
    });
    shards.forEach((s, k) => files.set(`${dir}/model-0000${k + 1}-of-00002.safetensors`, serializeSafetensors(s, { format: 'pt' })));
    files.set(`${dir}/model.safetensors.index.json`, new TextEncoder().encode(JSON.stringify({ metadata: {}, weight_map: weightMap })));
    const m = await AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) });
    const { logits: ref, t } = await baseLogits('llama_lora_qv');
    const { logits } = m.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
    const r = await keptDiff(logits, ref, t.attention_mask);
    expect(r.rel).toBeGreaterThan(0); // half precision changed the weights…
    expect(r.rel).toBeLessThan(1e-2); // …a little
    tf.dispose([logits, ref, ...Object.values(t)]);
    m.dispose();
  });

  it('a checkpoint of the bare body (no "model." prefix), tied head', async () => {
    const { files, dir } = folderInMemory(`${hfCase('qwen2_lora')}base`);
    const file = parseSafetensors(files.get(`${dir}/model.safetensors`)!);
    const bare: Record<string, TensorToWrite> = {};
    for (const [n, raw] of Object.entries(file.tensors)) bare[n.replace(/^model\./, '')] = { dtype: 'F32', shape: raw.shape, data: Float32Array.from(rawToArray(raw)) };
    files.set(`${dir}/model.safetensors`, serializeSafetensors(bare));
    const m = await AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) });
    const { logits: ref, t } = await baseLogits('qwen2_lora');
    const { logits } = m.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
    expect(await maxAbsDiff(logits, ref)).toBe(0);
    tf.dispose([logits, ref, ...Object.values(t)]);
    m.dispose();
  });

  it('loading leaves no tensors behind but the parameters', async () => {
    const before = tf.memory().numTensors;
    const m = await AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
    const params = m.parameters().length;
    m.dispose();
    // the model's RoPE tables (LLaMA) are its only non-parameter tensors; GPT-2 has none
    expect(tf.memory().numTensors).toBe(before);
    expect(params).toBeGreaterThan(0);
    const before2 = tf.memory().numTensors;
    const l = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    const n = l.parameters().length;
    expect(tf.memory().numTensors - before2).toBe(n + 3);
    l.dispose();
    expect(tf.memory().numTensors).toBe(before2);
  });
});
