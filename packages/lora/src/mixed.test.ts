// Per-sample adapters in one batch (adapterNames) against HF PEFT 0.21's own outputs
// (packages/lora/fixtures/llama_mixed_batch, made by HF with make_fixtures2.py: adapter a on q/k/v/o_proj,
// b on q/v/gate_proj; forward(adapter_names=['a','b']) and (['__base__','a'])).
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { PeftError, PeftModel, getPeftModel, loadSafetensors } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from './index';
import { keptDiff } from '../../../tools/testing/fixtures';

const TOL = 1e-4;
const ROOT = process.env.PEFTJS_FIXTURES_HF2 ? process.env.PEFTJS_FIXTURES_HF2.replace(/\/?$/, '/') : fileURLToPath(new URL('../fixtures/', import.meta.url));
const DIR = `${ROOT}llama_mixed_batch/`;

async function load(): Promise<PeftModel> {
  const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${DIR}base`), `${DIR}adapters/a`, { adapterName: 'a' });
  await peft.loadAdapter(`${DIR}adapters/b`, 'b');
  return peft;
}

describe('per-sample adapters (adapterNames) parity with HF PEFT: llama_mixed_batch', () => {
  it("['a', 'b'] and ['__base__', 'a'] match HF's logits; each row is its adapter's own forward", async () => {
    const t = await loadSafetensors(`${DIR}tensors.safetensors`);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const peft = await load();
    const ab = peft.forward({ ...inputs, adapterNames: ['a', 'b'] }).logits;
    const baseA = peft.forward({ ...inputs, adapterNames: ['__base__', 'a'] }).logits;
    const d1 = await keptDiff(ab, t.logits_a_b, t.attention_mask);
    const d2 = await keptDiff(baseA, t.logits_base_a, t.attention_mask);
    console.log(`llama_mixed_batch: [a, b] rel ${d1.rel.toExponential(2)}, [__base__, a] rel ${d2.rel.toExponential(2)}`);
    expect(d1.rel, `[a, b]: ${d1.diff} of ${d1.scale}`).toBeLessThan(TOL);
    expect(d2.rel, `[__base__, a]: ${d2.diff} of ${d2.scale}`).toBeLessThan(TOL);

    // the comparison can fail: the active adapter alone (a on both rows) is far from [a, b]
    const onlyA = peft.forward(inputs).logits;
    expect((await keptDiff(onlyA, t.logits_a_b, t.attention_mask)).rel).toBeGreaterThan(100 * TOL);
    // row by row: row 0 of [a, b] is a's forward, row 1 is b's; [__base__, …] row 0 is the base model's
    peft.setAdapter('b');
    const onlyB = peft.forward(inputs).logits;
    const base = peft.disableAdapter(() => peft.forward(inputs).logits);
    const row = (x: tf.Tensor, i: number) => tf.slice(x, [i, 0, 0], [1, -1, -1]);
    const mask = (i: number) => tf.slice(t.attention_mask, [i, 0], [1, -1]);
    for (const [got, want, i] of [[ab, onlyA, 0], [ab, onlyB, 1], [baseA, base, 0], [baseA, onlyA, 1]] as const) {
      const [g, w, m] = [row(got, i), row(want, i), mask(i)];
      expect((await keptDiff(g, w, m)).rel, `row ${i}`).toBeLessThan(1e-6);
      tf.dispose([g, w, m]);
    }
    // the per-sample names last for one call: the next forward is b's again
    const after = peft.forward(inputs).logits;
    expect((await keptDiff(after, onlyB)).diff).toBe(0);
    tf.dispose([ab, baseA, onlyA, onlyB, base, after, ...Object.values(t)]);
    peft.dispose();
  });

  it('generate({ adapterNames }) decodes each row with its adapter (as batches of that adapter alone)', async () => {
    const t = await loadSafetensors(`${DIR}tensors.safetensors`);
    const opts = { inputIds: t.input_ids, attentionMask: t.attention_mask, maxNewTokens: 6, eosTokenId: [] as number[], padTokenId: 0 };
    const peft = await load();
    const mixed = await peft.generate({ ...opts, adapterNames: ['b', '__base__'] });
    peft.setAdapter('b');
    const withB = await peft.generate(opts);
    const withBase = await peft.disableAdapter(() => peft.generate(opts));
    expect(mixed[0]).toEqual(withB[0]);
    expect(mixed[1]).toEqual(withBase[1]);
    expect(withB[1]).not.toEqual(withBase[1]); // b changes what row 1 decodes, so the test can fail
    tf.dispose(Object.values(t));
    peft.dispose();
  });

  it('refuses wrong names, lengths and merged adapters, naming them; gradients flow and tf.memory() stays flat', async () => {
    const peft = await load();
    const ids = [[1, 2, 3], [4, 5, 6]];
    const bad: [unknown, RegExp][] = [
      [['a'], /1 names for a batch of 2 rows/],
      [['a', 'zz'], /no adapter named "zz"/],
      ['a', /list of adapter names/],
    ];
    for (const [names, msg] of bad) {
      expect(() => peft.forward({ inputIds: ids, adapterNames: names as string[] })).toThrow(msg);
    }
    peft.mergeAdapter(['a']);
    expect(() => peft.forward({ inputIds: ids, adapterNames: ['a', 'b'] })).toThrow(PeftError);
    peft.unmergeAdapter();

    const step = () => {
      const o = peft.forward({ inputIds: ids, adapterNames: ['b', 'a'] });
      o.logits.dispose();
    };
    step();
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(n0);

    // the mixed forward is differentiable: b's parameters get a gradient from row 0 only
    const bA = peft.getParameter('base_model.model.model.layers.0.self_attn.q_proj.lora_A.b.weight');
    bA.trainable = true; // loaded for inference
    const { value, grads } = tf.variableGrads(() => tf.sum(peft.forward({ inputIds: ids, adapterNames: ['b', '__base__'] }).logits) as tf.Scalar, [bA]);
    const g = grads[bA.name];
    expect((await tf.max(tf.abs(g)).data())[0]).toBeGreaterThan(0);
    tf.dispose([value, g]);
    // with gradient checkpointing a training forward would recompute without the names: refused
    peft.model.gradientCheckpointingEnable();
    expect(() => tf.variableGrads(() => tf.sum(peft.forward({ inputIds: ids, adapterNames: ['b', 'a'] }).logits) as tf.Scalar, [bA])).toThrow(/gradient checkpointing/);
    peft.model.gradientCheckpointingDisable();
    peft.dispose();
  });

  it('embedding and linear LoRA layers together: each row equals its adapter\'s own forward', async () => {
    const cfg = (i: number) => new LoraConfig({ r: 2 + i, targetModules: ['embed_tokens', 'o_proj'], initLoraWeights: false });
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(`${DIR}base`), cfg(0), 'x');
    peft.addAdapter('y', cfg(1));
    const ids = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]];
    const mixed = peft.forward({ inputIds: ids, adapterNames: ['y', 'x', '__base__'] }).logits;
    const per: tf.Tensor[] = [];
    for (const n of ['y', 'x']) {
      peft.setAdapter(n);
      per.push(peft.forward({ inputIds: ids }).logits);
    }
    per.push(peft.disableAdapter(() => peft.forward({ inputIds: ids }).logits));
    for (let i = 0; i < 3; i++) {
      const [g, w] = [tf.slice(mixed, [i, 0, 0], [1, -1, -1]), tf.slice(per[i], [i, 0, 0], [1, -1, -1])];
      expect((await keptDiff(g, w)).rel, `row ${i}`).toBeLessThan(1e-6);
      tf.dispose([g, w]);
    }
    const [y0, x0] = [tf.slice(per[0], [0, 0, 0], [1, -1, -1]), tf.slice(per[1], [0, 0, 0], [1, -1, -1])];
    expect((await keptDiff(y0, x0)).rel).toBeGreaterThan(100 * TOL); // the adapters differ: the test can fail
    tf.dispose([mixed, ...per, y0, x0]);
    peft.dispose();
  });
});
