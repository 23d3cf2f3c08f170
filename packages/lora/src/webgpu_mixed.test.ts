// addWeightedAdapter and per-sample adapters on the WebGPU backend (lavapipe in CI): no synchronous reads
// (they throw there), parity with HF PEFT 0.21's fixtures. Without any WebGPU adapter the suite is skipped.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { initBackend, PeftModel, loadSafetensors } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import './index';
import { keptDiff } from '../../../tools/testing/fixtures';

const ROOT = process.env.PEFTJS_FIXTURES_HF2 ? process.env.PEFTJS_FIXTURES_HF2.replace(/\/?$/, '/') : fileURLToPath(new URL('../fixtures/', import.meta.url));
const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const why = available ? '' : (report as Error).message;

async function load(dir: string): Promise<PeftModel> {
  const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapters/a`, { adapterName: 'a' });
  await peft.loadAdapter(`${dir}adapters/b`, 'b');
  return peft;
}

/** The fixture's batch as plain arrays (tensors do not move from webgpu to cpu in Node) and its tensors on webgpu. */
async function batch(dir: string) {
  const t = await loadSafetensors(`${dir}tensors.safetensors`);
  return { t, inputIds: (await t.input_ids.array()) as number[][], attentionMask: (await t.attention_mask.array()) as number[][] };
}

describe.skipIf(!available)(`weighted adapters and per-sample adapters on WebGPU ${available ? '' : `(skipped: ${why})`}`, () => {
  it('runs on webgpu', () => {
    expect(tf.getBackend()).toBe('webgpu');
  });

  it('addWeightedAdapter (svd, ties) matches HF on llama_weighted_lora', async () => {
    const dir = `${ROOT}llama_weighted_lora/`;
    const { t, inputIds, attentionMask } = await batch(dir);
    const peft = await load(dir);
    await peft.addWeightedAdapter(['a', 'b'], [1.0, 0.5], 'w_svd', { combinationType: 'svd', svdRank: 3 });
    await peft.addWeightedAdapter(['a', 'b'], [0.8, 0.6], 'w_ties', { combinationType: 'ties', density: 0.5 });
    for (const kind of ['svd', 'ties']) {
      peft.setAdapter(`w_${kind}`);
      const logits = peft.forward({ inputIds, attentionMask }).logits;
      const d = await keptDiff(logits, t[`logits_${kind}`], t.attention_mask);
      expect(d.rel, `${kind}: ${d.diff} of ${d.scale}`).toBeLessThan(1e-4);
      logits.dispose();
    }
    tf.dispose(Object.values(t));
    peft.dispose();
  });

  it('forward and generate with adapterNames match HF / each adapter alone on llama_mixed_batch', async () => {
    const dir = `${ROOT}llama_mixed_batch/`;
    const { t, inputIds, attentionMask } = await batch(dir);
    const peft = await load(dir);
    for (const [names, key] of [[['a', 'b'], 'logits_a_b'], [['__base__', 'a'], 'logits_base_a']] as const) {
      const logits = peft.forward({ inputIds, attentionMask, adapterNames: [...names] }).logits;
      const d = await keptDiff(logits, t[key], t.attention_mask);
      expect(d.rel, `${names}: ${d.diff} of ${d.scale}`).toBeLessThan(1e-4);
      logits.dispose();
    }
    const opts = { inputIds, attentionMask, maxNewTokens: 5, eosTokenId: [] as number[], padTokenId: 0 };
    const mixed = await peft.generate({ ...opts, adapterNames: ['b', '__base__'] });
    peft.setAdapter('b');
    const withB = await peft.generate(opts);
    const withBase = await peft.disableAdapter(() => peft.generate(opts));
    expect(mixed[0]).toEqual(withB[0]);
    expect(mixed[1]).toEqual(withBase[1]);
    tf.dispose(Object.values(t));
    peft.dispose();
  });
});
