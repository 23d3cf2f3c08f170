// Composition blocks on LoRA layers against their definitions, each computed another way:
// Stack and Average in weight space (a base model whose weights hold the composed delta, no adapter code at
// all), Parallel and BatchSplit from single-adapter forwards of the rows. AdapterHub's LoRA semantics: a stacked
// LoRA reads the previous one's output, so Stack(a, b) adds s_b·B_b·A_b·s_a·B_a·A_a; Average adds Σ wᵢ·sᵢ·Bᵢ·Aᵢ.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { Average, BatchSplit, Fuse, Linear, Parallel, PeftError, Split, Stack, getPeftModel, manualSeed, type PeftModel, type PreTrainedModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from './index';
import type { LoraLinear } from './layer';
import { peftError } from '../../../tools/testing/errors';

const BASE = fileURLToPath(new URL('../fixtures/llama_mixed_batch/base', import.meta.url));
const IDS = [
  [5, 17, 99, 3, 42, 7],
  [8, 1, 250, 19, 4, 60],
  [11, 12, 13, 14, 15, 16],
];

/** LoRA a on q/o_proj and b on q/o/v_proj of the tiny LLaMA (hidden 32: q and o square, v 32 → 16), B random. */
async function twoAdapters(): Promise<PeftModel> {
  manualSeed(7);
  const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASE), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'o_proj'], initLoraWeights: false }), 'a');
  peft.addAdapter('b', new LoraConfig({ r: 2, loraAlpha: 6, targetModules: ['q_proj', 'o_proj', 'v_proj'], initLoraWeights: false }));
  return peft;
}

function loraLayers(peft: PeftModel): [string, LoraLinear][] {
  return [...peft.model.namedModules()].filter((e): e is [string, LoraLinear] => e[1].constructor.name === 'LoraLinear');
}

/** s·B·A of adapter `n` in `layer` ([out, in]). */
function delta(layer: LoraLinear, n: string): tf.Tensor {
  return tf.tidy(() => tf.mul(tf.matMul(layer.loraB.get(n)!.weight, layer.loraA.get(n)!.weight), layer.scaling[n]));
}

/** A fresh base model whose weights at each LoRA layer are W + delta(layer) (undefined: W). */
async function baseWith(peft: PeftModel, deltaOf: (layer: LoraLinear) => tf.Tensor | undefined): Promise<PreTrainedModel> {
  const ref = await AutoModelForCausalLM.fromPretrained(BASE);
  for (const [path, layer] of loraLayers(peft)) {
    const d = deltaOf(layer);
    if (!d) continue;
    const lin = ref.getSubmodule(path) as Linear;
    const w = tf.add(lin.weight, d);
    lin.weight.assign(w);
    tf.dispose([w, d]);
  }
  return ref;
}

async function maxDiff(a: tf.Tensor, b: tf.Tensor): Promise<{ diff: number; scale: number }> {
  const [d, s] = tf.tidy(() => [tf.max(tf.abs(tf.sub(a, b))), tf.max(tf.abs(b))]);
  const out = { diff: (await d.data())[0], scale: (await s.data())[0] };
  tf.dispose([d, s]);
  return out;
}

const rowsOf = (t: tf.Tensor, begin: number, size: number) => tf.slice(t, [begin], [size]);

describe('composition blocks on LoRA layers', () => {
  it('Stack(a, b) and Average(a, b) equal a base model with the composed delta in its weights', async () => {
    const peft = await twoAdapters();
    const sa = (l: LoraLinear) => (l.has('a') ? delta(l, 'a') : undefined);
    const run = (m: { forward: PeftModel['forward'] }) => m.forward({ inputIds: IDS }).logits;
    tf.dispose(run(peft)); // the model's caches for this shape
    const before = tf.memory().numTensors;

    // Stack: at q/o_proj b reads a's output, at v_proj (b alone) b reads the input
    peft.setActiveAdapters(Stack('a', 'b'));
    expect(peft.activeComposition?.type).toBe('Stack');
    const stackRef = await baseWith(peft, (l) => tf.tidy(() => (l.has('a') ? tf.matMul(delta(l, 'b'), delta(l, 'a')) : delta(l, 'b'))));
    const stacked = run(peft);
    const stackWant = run(stackRef);
    const ds = await maxDiff(stacked, stackWant);
    expect(ds.diff / ds.scale, `Stack: ${ds.diff} of ${ds.scale}`).toBeLessThan(1e-5);

    // the comparison can fail: the sum of the deltas (HF's several active adapters) is another model
    peft.setAdapter(['a', 'b']);
    expect(peft.activeComposition).toBeNull();
    const summed = run(peft);
    expect((await maxDiff(summed, stackWant)).diff).toBeGreaterThan(100 * ds.diff + 1e-4);

    // Average with weights [1, 3] (normalised: 0.25, 0.75): W + 0.25·Δa + 0.75·Δb (v_proj, without a: 0.75·Δb)
    peft.setActiveAdapters(Average('a', 'b', { weights: [1, 3] }));
    const avgRef = await baseWith(peft, (l) => tf.tidy(() => (l.has('a') ? tf.add(tf.mul(delta(l, 'a'), 0.25), tf.mul(delta(l, 'b'), 0.75)) : tf.mul(delta(l, 'b'), 0.75))));
    const averaged = run(peft);
    const avgWant = run(avgRef);
    const da = await maxDiff(averaged, avgWant);
    expect(da.diff / da.scale, `Average: ${da.diff} of ${da.scale}`).toBeLessThan(1e-5);
    expect((await maxDiff(averaged, stackWant)).diff).toBeGreaterThan(1e-3);

    // a single adapter through the same blocks is that adapter: Stack('a') is setAdapter('a')
    peft.setActiveAdapters('a');
    expect(peft.activeComposition).toBeNull();
    const aRef = await baseWith(peft, sa);
    const onlyA = run(peft);
    const aWant = run(aRef);
    expect((await maxDiff(onlyA, aWant)).diff).toBeLessThan(1e-5);

    tf.dispose([stacked, stackWant, summed, averaged, avgWant, onlyA, aWant]);
    for (const m of [stackRef, avgRef, aRef]) m.dispose();
    expect(tf.memory().numTensors).toBe(before);
    peft.dispose();
  });

  it("Parallel(a, b) replicates the batch: rows i·B … are branch i's own forward; BatchSplit gives each slice its adapter", async () => {
    const peft = await twoAdapters();
    const inputs = { inputIds: IDS, attentionMask: [[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]] };
    peft.setAdapter('a');
    const onlyA = peft.forward(inputs).logits;
    peft.setAdapter('b');
    const onlyB = peft.forward(inputs).logits;
    const before = tf.memory().numTensors;

    peft.setActiveAdapters(Parallel('a', 'b'));
    const warm = peft.forward({ ...inputs, labels: IDS }); // a batch of 6 rows: the model's caches for that shape
    tf.dispose([warm.logits, warm.loss!]);
    const before2 = tf.memory().numTensors;
    const par = peft.forward(inputs).logits;
    expect(par.shape[0]).toBe(2 * IDS.length);
    const [pa, pb] = [rowsOf(par, 0, 3), rowsOf(par, 3, 3)];
    expect((await maxDiff(pa, onlyA)).diff).toBeLessThan(1e-5);
    expect((await maxDiff(pb, onlyB)).diff).toBeLessThan(1e-5);
    expect((await maxDiff(pa, onlyB)).diff).toBeGreaterThan(1e-3); // a branch is not the other adapter
    // labels are replicated with the inputs: the loss is the mean over both branches
    const withLoss = peft.forward({ ...inputs, labels: IDS });
    expect(withLoss.loss!.rank).toBe(0);
    tf.dispose([par, pa, pb, withLoss.loss!, withLoss.logits]);
    expect(tf.memory().numTensors).toBe(before2);

    peft.setActiveAdapters(BatchSplit('a', 'b', { batchSizes: [1, 2] }));
    const split = peft.forward(inputs).logits;
    expect(split.shape[0]).toBe(3);
    const [s0, s12, a0, b12] = [rowsOf(split, 0, 1), rowsOf(split, 1, 2), rowsOf(onlyA, 0, 1), rowsOf(onlyB, 1, 2)];
    expect((await maxDiff(s0, a0)).diff).toBeLessThan(1e-5);
    expect((await maxDiff(s12, b12)).diff).toBeLessThan(1e-5);
    // the same rows through HF's per-sample adapters (parity-tested against HF PEFT)
    const perSample = peft.forward({ ...inputs, adapterNames: ['a', 'b', 'b'] }).logits;
    expect((await maxDiff(split, perSample)).diff).toBeLessThan(1e-5);
    expect(() => peft.forward({ inputIds: IDS.slice(0, 2) })).toThrow(/batchSizes \[1, 2\] sum to 3, but the batch has 2 rows/);
    tf.dispose([split, s0, s12, a0, b12, perSample]);
    expect(tf.memory().numTensors).toBe(before);

    // generation cannot replicate a cache
    peft.setActiveAdapters(Parallel('a', 'b'));
    await expect(peft.generate({ inputIds: [IDS[0]], maxNewTokens: 2 })).rejects.toThrow(/Parallel does not run with a key\/value cache/);
    tf.dispose([onlyA, onlyB]);
    peft.dispose();
  });

  it('refuses what LoRA layers and the nesting rules do not allow, naming the block', async () => {
    const peft = await twoAdapters();
    const err = (fn: () => unknown) => peftError(fn).message;
    expect(err(() => peft.setActiveAdapters(Fuse('a', 'b')))).toMatch(/Fuse\[a, b\] is not supported at .*q_proj \(a lora\.Linear layer holding "a", "b"\); LORA layers support Stack, Parallel, Average, BatchSplit/);
    expect(err(() => peft.setActiveAdapters(Stack('a', 'zz')))).toMatch(/no adapter named "zz"; adapters: a, b/);
    expect(err(() => peft.setActiveAdapters(Split('a', 'b', { splits: 3 })))).toMatch(/Split\[a, b\] is not supported at .*; LORA layers support Stack, Parallel, Average, BatchSplit/);
    expect(err(() => peft.setActiveAdapters(Parallel('a', Parallel('a', 'b'))))).toMatch(/cannot nest Parallel\[a, b\] in Parallel\[a, Parallel\[a, b\]\]/);
    expect(err(() => peft.setActiveAdapters(Stack(Average('a', BatchSplit('a', 'b', { batchSizes: 1 })))))).toMatch(/too deep: cannot have BatchSplit\[a, b\] at level 2/);
    // two LoRAs stacked on a non-square layer (v_proj: 32 → 16): b would read a's 16-wide output
    peft.addAdapter('v1', new LoraConfig({ r: 2, targetModules: ['v_proj'], initLoraWeights: false }));
    peft.addAdapter('v2', new LoraConfig({ r: 2, targetModules: ['v_proj'], initLoraWeights: false }));
    peft.setActiveAdapters(Stack('v1', 'v2'));
    expect(err(() => peft.forward({ inputIds: IDS }))).toMatch(/Stack\[v1, v2\]: in a Stack, LoRA adapter "v2" reads the previous adapter's output .* needs a square layer; a LoRA layer \(32 → 16\) is not/);
    peft.setAdapter('a');
    // a failed call leaves the previous setup active
    expect(peft.activeAdapters).toEqual(['a']);
    expect(peft.activeComposition).toBeNull();
    peft.dispose();
  });

  it('trainAdapter freezes everything but the setup\'s adapters; setAdapter ends the composition', async () => {
    const peft = await twoAdapters();
    peft.trainAdapter('b');
    const trainable = [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
    expect(trainable.length).toBe(2 * 2 * 3); // A and B at q, o, v of two layers
    expect(trainable.every((k) => /\.lora_[AB]\.b\./.test(k))).toBe(true);
    peft.trainAdapter(Parallel('a', 'b'));
    const both = [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
    expect(both.length).toBe(2 * 2 * 2 + 12);
    expect(peft.activeComposition?.type).toBe('Parallel');
    // training steps under Parallel with tensor inputs (replicated inside the forward): both branches learn, flat memory
    const ids = tf.tensor2d(IDS, undefined, 'int32');
    const opt = tf.train.adam(1e-2);
    const vars = peft.parameters().filter((p) => p.trainable);
    const bOf = (n: string) => [...peft.namedParameters()].find(([k]) => k.includes(`lora_B.${n}.`))![1].clone();
    const [b0a, b0b] = [bOf('a'), bOf('b')];
    const step = () => tf.dispose(opt.minimize(() => peft.forward({ inputIds: ids, labels: ids }).loss!, true, vars)!);
    step();
    const before = tf.memory().numTensors;
    step();
    step();
    expect(tf.memory().numTensors).toBe(before);
    const [b1a, b1b] = [bOf('a'), bOf('b')];
    expect((await maxDiff(b1a, b0a)).diff).toBeGreaterThan(1e-4);
    expect((await maxDiff(b1b, b0b)).diff).toBeGreaterThan(1e-4);
    tf.dispose([ids, b0a, b0b, b1a, b1b]);
    opt.dispose();
    // adding an adapter keeps the composition; setAdapter replaces it
    peft.addAdapter('c', new LoraConfig({ r: 2, targetModules: ['q_proj'] }));
    expect(peft.activeComposition?.type).toBe('Parallel');
    // deleting an adapter outside it keeps the composition; deleting one of its adapters ends it
    peft.deleteAdapter('c');
    expect(peft.activeComposition?.type).toBe('Parallel');
    peft.addAdapter('c', new LoraConfig({ r: 2, targetModules: ['q_proj'] }));
    peft.setAdapter('c');
    expect(peft.activeComposition).toBeNull();
    for (const [, l] of loraLayers(peft)) expect(l.activeComposition).toBeNull();
    peft.setActiveAdapters(Parallel('a', 'b'));
    peft.deleteAdapter('b');
    expect(peft.activeComposition).toBeNull();
    expect(peft.activeAdapters).toEqual(['a']);
    peft.dispose();
  });
});

describe('composition and merging', () => {
  it('merging is refused while a composition is active (merged weights would sum the deltas)', async () => {
    const peft = await twoAdapters();
    peft.setActiveAdapters(Stack('a', 'b'));
    expect(() => peft.mergeAdapter()).toThrow(/cannot merge while the composition Stack\[a, b\] is active/);
    expect(() => peft.mergeAndUnload()).toThrow(/cannot merge while the composition Stack\[a, b\] is active/);
    peft.setAdapter(['a', 'b']);
    expect(() => peft.mergeAdapter()).not.toThrow();
    peft.dispose();
  });
});

describe('composition.json', () => {
  it('a composed LoRA setup round-trips; a hostile composition.json is refused naming the file and field', async () => {
    const { mkdtempSync, readFileSync, writeFileSync, readdirSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { PeftModel } = await import('@peftjs/core');
    const peft = await twoAdapters();
    peft.setActiveAdapters(Average('a', 'b', { weights: [2, 1] }));
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-comp-'));
    await peft.savePretrained(dir);
    expect(readdirSync(dir).sort()).toEqual(['a', 'b', 'composition.json']);
    const json = JSON.parse(readFileSync(join(dir, 'composition.json'), 'utf8'));
    expect(json).toEqual({ active_setup: { type: 'Average', children: ['a', 'b'], weights: [2 / 3, 1 / 3] }, adapters: { a: 'a', b: 'b' } });
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(BASE), dir);
    expect(again.activeComposition?.type).toBe('Average');
    const [x, y] = [peft.forward({ inputIds: IDS }).logits, again.forward({ inputIds: IDS }).logits];
    expect((await maxDiff(x, y)).diff).toBe(0);
    tf.dispose([x, y]);
    again.dispose();

    const hostile = async (edit: (j: Record<string, unknown>) => void, re: RegExp) => {
      const j = structuredClone(json);
      edit(j);
      writeFileSync(join(dir, 'composition.json'), JSON.stringify(j));
      const base = await AutoModelForCausalLM.fromPretrained(BASE);
      const e = await PeftModel.fromPretrained(base, dir).catch((err) => err);
      expect(PeftError.isInstance(e), String(e)).toBe(true);
      expect(e.message).toMatch(re);
      base.dispose();
    };
    await hostile((j) => delete j.active_setup, /composition\.json: field "active_setup" is missing/);
    await hostile((j) => ((j.adapters as Record<string, string>).b = undefined as never), /the active setup names "b", which field "adapters" does not list/);
    await hostile((j) => (j.active_setup = { type: 'Mix', children: ['a'] }), /composition\.json: field "active_setup": unknown composition block type "Mix"/);
    await hostile((j) => (j.active_setup = { type: 'Fuse', children: ['a', { type: 'Parallel', children: ['b', 'a'] }] }), /composition\.json: adapter setup .* cannot nest Parallel\[b, a\] in Fuse/);
    await hostile((j) => ((j.adapters as Record<string, string>).b = '../../etc'), /adapter "b" folder/);
    await hostile((j) => (j.adapters = ['a', 'b']), /field "adapters" must map names to folder names/);
    // a later save without a composition removes the stale composition.json: the folder loads as saved
    peft.setAdapter('a');
    await peft.savePretrained(dir);
    expect(readdirSync(dir).sort()).toEqual(['a', 'b']);
    peft.dispose();
  });
});

describe('a method without composition beside composed LoRA adapters', () => {
  it('LN tuning under Stack(ln, Parallel(a, b)) runs on every replica; Parallel(ln, a) is refused naming LN_TUNING', async () => {
    const { LNTuningConfig } = await import('@peftjs/ln-tuning');
    const peft = await twoAdapters();
    peft.addAdapter('ln', new LNTuningConfig({ targetModules: ['input_layernorm'] }));
    // the LN copies away from the base's, so that 'ln' changes the logits
    for (const [k, p] of peft.namedParameters()) {
      if (!k.includes('.ln.')) continue;
      const r = tf.tidy(() => tf.add(p, tf.randomNormal(p.shape, 0, 0.3, 'float32', 5)));
      p.assign(r);
      r.dispose();
    }
    const rows = (t: tf.Tensor, b: number) => tf.slice(t, [b], [IDS.length]);
    peft.setAdapter(['ln', 'a']);
    const lnA = peft.forward({ inputIds: IDS }).logits;
    peft.setAdapter(['ln', 'b']);
    const lnB = peft.forward({ inputIds: IDS }).logits;
    peft.setActiveAdapters(Stack('ln', Parallel('a', 'b')));
    const par = peft.forward({ inputIds: IDS }).logits;
    const [p0, p1] = [rows(par, 0), rows(par, IDS.length)];
    expect((await maxDiff(p0, lnA)).diff).toBeLessThan(1e-5);
    expect((await maxDiff(p1, lnB)).diff).toBeLessThan(1e-5);
    peft.setAdapter('a');
    const onlyA = peft.forward({ inputIds: IDS }).logits;
    expect((await maxDiff(p0, onlyA)).diff).toBeGreaterThan(1e-3); // 'ln' took part
    expect(() => peft.setActiveAdapters(Parallel('ln', 'a'))).toThrow(/Parallel\[ln, a\] is not supported at .*input_layernorm .*LN_TUNING layers support no composition blocks/);
    tf.dispose([lnA, lnB, par, p0, p1, onlyA]);
    peft.dispose();
  });
});
