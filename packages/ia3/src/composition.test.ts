// Composition blocks on IA3 layers (AdapterHub's (IA)³ composes like its LoRA: the scales multiply in a Stack
// and are averaged in Average) against their definitions in weight space: a base model whose weights are scaled
// by the composed vector (rows of W for output scaling, columns for feed-forward input scaling), no IA3 code.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { Average, BatchSplit, Fuse, Linear, Parallel, Stack, getPeftModel, manualSeed, type PeftModel, type PreTrainedModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { IA3Config } from './index';
import type { IA3Linear } from './layer';

const BASE = fileURLToPath(new URL('../../lora/fixtures/llama_mixed_batch/base', import.meta.url));
const IDS = [
  [5, 17, 99, 3, 42, 7],
  [8, 1, 250, 19, 4, 60],
  [11, 12, 13, 14, 15, 16],
];

async function twoAdapters(): Promise<PeftModel> {
  manualSeed(3);
  const cfg = () => new IA3Config({ targetModules: ['k_proj', 'v_proj', 'down_proj'], feedforwardModules: ['down_proj'], initIa3Weights: false });
  const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASE), cfg(), 'a');
  peft.addAdapter('b', cfg());
  return peft;
}

const layers = (peft: PeftModel) => [...peft.model.namedModules()].filter((e): e is [string, IA3Linear] => e[1].constructor.name === 'IA3Linear');

/** A base model whose weight at each IA3 layer is scaled by `vec(layer)` (flat: [out] or [in]). */
async function scaled(peft: PeftModel, vec: (l: IA3Linear) => tf.Tensor): Promise<PreTrainedModel> {
  const ref = await AutoModelForCausalLM.fromPretrained(BASE);
  for (const [path, l] of layers(peft)) {
    const lin = ref.getSubmodule(path) as Linear;
    const v = vec(l);
    const w = tf.tidy(() => tf.mul(lin.weight, l.isFeedforward ? v.reshape([1, -1]) : v.reshape([-1, 1])));
    lin.weight.assign(w);
    tf.dispose([w, v]);
  }
  return ref;
}

async function maxDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

describe('composition blocks on IA3 layers', () => {
  it('Stack multiplies the vectors, Average weighs them; Parallel and BatchSplit are rows of single forwards; flat memory', async () => {
    const peft = await twoAdapters();
    const l = (layer: IA3Linear, n: string) => layer.ia3L.get(n)!.reshape([-1]);
    const run = (m: { forward: PeftModel['forward'] }) => m.forward({ inputIds: IDS }).logits;
    tf.dispose(run(peft));
    const before = tf.memory().numTensors;
    const check = async (setup: Parameters<PeftModel['setActiveAdapters']>[0], vec: (layer: IA3Linear) => tf.Tensor) => {
      peft.setActiveAdapters(setup);
      const ref = await scaled(peft, (layer) => tf.tidy(() => vec(layer)));
      const [got, want] = [run(peft), run(ref)];
      const d = await maxDiff(got, want);
      ref.dispose();
      return { got, want, d };
    };
    const stack = await check(Stack('a', 'b'), (layer) => tf.mul(l(layer, 'a'), l(layer, 'b')));
    expect(stack.d).toBeLessThan(1e-4);
    const avg = await check(Average('a', 'b', { weights: [3, 1] }), (layer) => tf.add(tf.mul(l(layer, 'a'), 0.75), tf.mul(l(layer, 'b'), 0.25)));
    expect(avg.d).toBeLessThan(1e-4);
    expect(await maxDiff(stack.got, avg.got)).toBeGreaterThan(1e-2);

    peft.setAdapter('a');
    const a = run(peft);
    peft.setAdapter('b');
    const b = run(peft);
    peft.setActiveAdapters(Parallel('a', 'b'));
    const par = run(peft);
    const [p0, p1] = [tf.slice(par, [0], [3]), tf.slice(par, [3], [3])];
    expect(await maxDiff(p0, a)).toBeLessThan(1e-5);
    expect(await maxDiff(p1, b)).toBeLessThan(1e-5);
    peft.setActiveAdapters(BatchSplit('b', 'a', { batchSizes: [1, 2] }));
    const split = run(peft);
    const [s0, s12, b0, a12] = [tf.slice(split, [0], [1]), tf.slice(split, [1], [2]), tf.slice(b, [0], [1]), tf.slice(a, [1], [2])];
    expect(await maxDiff(s0, b0)).toBeLessThan(1e-5);
    expect(await maxDiff(s12, a12)).toBeLessThan(1e-5);
    expect(() => peft.setActiveAdapters(Fuse('a', 'b'))).toThrow(/IA3 layers support Stack, Parallel, Average, BatchSplit/);
    tf.dispose([stack.got, stack.want, avg.got, avg.want, a, b, par, p0, p1, split, s0, s12, b0, a12]);
    peft.setAdapter('a');
    expect(tf.memory().numTensors).toBe(before);
    peft.dispose();
  });
});
