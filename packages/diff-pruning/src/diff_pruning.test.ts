// Diff pruning on real model code: identity at init, only the diff trains, the L0 term in the loss, the
// projection's exact sparsity, save → load exact (sparse file: int32 indices + values), merge = adapted logits,
// unmerge, mergeAndUnload, flat memory, and errors that name the field, module or tensor.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Conv1D, Linear, PeftModel, getPeftModel, loadSafetensors, manualSeed, parseSafetensors, tensorsToSafetensors, type PreTrainedModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { Trainer } from '@peftjs/trainer';
import { DEFAULT_GATE, DiffPruningConfig, DiffPruningLayer, keptCount, projectDiffPruning } from './index';
import { hfCase } from '../../../tools/testing/fixtures';
import { expectOnlyMethodChanged, snapshot, trainStep } from '../../../tools/testing/prompt_learning';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-diff-pruning-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const LLAMA = `${hfCase('llama_lora_qv')}base`;
const QWEN = `${hfCase('qwen2_lora')}base`;
const GPT2 = `${hfCase('gpt2_lora_cattn')}base`;
const batch = { inputIds: [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]], attentionMask: [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], labels: [[5, 6, 7, 8, 9], [-100, 2, 3, 4, 5]] };
const isDiff = (k: string) => k.includes('.diff_pruning_');

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}
async function scalar(t: tf.Tensor): Promise<number> {
  const v = (await t.data())[0];
  t.dispose();
  return v;
}
function linearNumels(model: PreTrainedModel): number[] {
  return [...model.namedModules()].filter(([n, m]) => m instanceof Linear && !model.outputHeadNames.includes(n)).map(([, m]) => (m as Linear).weight.size);
}
/** A few Adam steps on the trainable parameters, so that the diff is not zero. */
function train(peft: PeftModel, steps: number, lr = 1e-2): void {
  peft.train();
  const opt = tf.train.adam(lr);
  for (let i = 0; i < steps; i++) tf.dispose(opt.minimize(() => peft.forward(batch).loss!, true, peft.trainableParameters()) ?? []);
  opt.dispose();
  peft.eval();
}

describe('diff pruning on LLaMA (all-linear weights)', () => {
  it('identity at init; only δ and log α train; the training loss adds λ·Σ E[L0], the eval loss does not', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(LLAMA);
    const base = model.forward(batch);
    const peft = getPeftModel(model, new DiffPruningConfig({ sparsityPenalty: 1e-4 }));
    const cfg = peft.peftConfig.default as DiffPruningConfig;
    expect(cfg.targetModules).toHaveLength(7 * model.config.numHiddenLayers);
    expect(peft.model.getSubmodule('model.layers.0.mlp.down_proj')).toBeInstanceOf(DiffPruningLayer);
    const numels = linearNumels(peft.model);
    const entries = numels.reduce((a, b) => a + b, 0);
    expect(peft.getNbTrainableParameters()[0]).toBe(2 * entries); // δ and log α
    for (const [k, p] of peft.namedParameters()) expect(p.trainable, k).toBe(isDiff(k));
    peft.eval();
    const out = peft.forward(batch);
    expect(await maxAbsDiff(out.logits, base.logits)).toBe(0);
    expect(await scalar(tf.sub(out.loss!, base.loss!))).toBe(0);
    // δ = 0: whatever z is sampled, the task loss is the base's, so the training loss is base + λ·n·sigmoid(5 − β·log(−γ/ζ))
    peft.train();
    const trainLoss = peft.forward(batch).loss!;
    const perEntry = 1 / (1 + Math.exp(-(5 - DEFAULT_GATE.beta * Math.log(-DEFAULT_GATE.gamma / DEFAULT_GATE.zeta))));
    const l0 = await scalar(tf.sub(trainLoss, base.loss!));
    expect(Math.abs(l0 - 1e-4 * entries * perEntry) / (1e-4 * entries * perEntry)).toBeLessThan(1e-5);
    tf.dispose([trainLoss, out.logits, out.loss!, base.logits, base.loss!]);

    // δ = 0 gives log α no task gradient at the first step (∂L/∂z = δ·∂L/∂W): every δ moves, log α only after
    // (where the sampled gate is not clipped at 1: about 3% of the entries at log α = 5)
    const s0 = snapshot(peft);
    trainStep(peft, batch, 0.05);
    expect(expectOnlyMethodChanged(s0, snapshot(peft), (k) => k.includes('.diff_pruning_delta.'))).toBe(numels.length);
    const s1 = snapshot(peft);
    trainStep(peft, batch, 0.05);
    expect(expectOnlyMethodChanged(s1, snapshot(peft), isDiff)).toBeGreaterThan(numels.length);
  });

  it('projection keeps exactly round(density·numel) entries per tensor; save → load exact; the file is the sparse diff', async () => {
    manualSeed(1);
    const density = 0.05;
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new DiffPruningConfig({ density }));
    train(peft, 4);
    const q = 'model.layers.0.self_attn.q_proj';
    const gated = peft.forward({ inputIds: batch.inputIds }).logits;

    // a gated adapter saves as its projection
    const outGated = join(tmp, 'gated');
    await peft.savePretrained(outGated);
    const kept = projectDiffPruning(peft);
    const numels = linearNumels(peft.model);
    expect(kept).toBe(numels.reduce((a, n) => a + keptCount(density, n), 0));
    expect((peft.peftConfig.default as DiffPruningConfig).projected).toBe(true);
    expect(peft.getNbTrainableParameters()[0]).toBe(kept); // the values; the indices never train
    const projected = peft.forward({ inputIds: batch.inputIds }).logits;
    expect(await maxAbsDiff(projected, gated)).toBeGreaterThan(0); // 95% of the gated diff is gone

    const out = join(tmp, 'projected');
    await peft.savePretrained(out);
    const json = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(json.peft_type).toBe('DIFF_PRUNING');
    expect(json.density).toBe(density);
    expect(json.projected).toBe(true);
    expect(json.diff_parameters).toEqual(['weight']);
    const file = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(Object.keys(file.tensors)).toHaveLength(2 * numels.length);
    const idx = file.tensors[`base_model.model.${q}.diff_pruning_indices.weight`];
    const val = file.tensors[`base_model.model.${q}.diff_pruning_values.weight`];
    const k = keptCount(density, 32 * 32);
    expect([idx.dtype, idx.shape, val.dtype, val.shape]).toEqual(['I32', [k], 'F32', [k]]);
    // the gated save wrote the same projection, byte for byte
    expect(Buffer.compare(readFileSync(join(outGated, 'adapter_model.safetensors')), readFileSync(join(out, 'adapter_model.safetensors')))).toBe(0);
    expect(JSON.parse(readFileSync(join(outGated, 'adapter_config.json'), 'utf8'))).toEqual(json);

    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), out);
    expect(await maxAbsDiff(again.forward({ inputIds: batch.inputIds }).logits, projected)).toBe(0);
    const fromGated = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), outGated);
    expect(await maxAbsDiff(fromGated.forward({ inputIds: batch.inputIds }).logits, projected)).toBe(0);
    gated.dispose();

    // training goes on with the mask fixed: the values move, the indices do not, the count stays exact
    const idxBefore = Array.from(await peft.model.getParameter(`${q}.diff_pruning_indices.default.weight`).data());
    const s0 = snapshot(peft);
    train(peft, 2);
    const changed = expectOnlyMethodChanged(s0, snapshot(peft), (name) => name.includes('.diff_pruning_values.'));
    expect(changed).toBe(numels.length);
    expect(Array.from(await peft.model.getParameter(`${q}.diff_pruning_indices.default.weight`).data())).toEqual(idxBefore);
    projected.dispose();
  });

  it('merge = adapted logits (bit for bit); unmerge restores the base; safeMerge; mergeAndUnload; no leaks', async () => {
    manualSeed(2);
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new DiffPruningConfig({ density: 0.02, diffParameters: ['weight'] }));
    train(peft, 3);
    const q = 'model.layers.1.mlp.up_proj';
    const w0 = peft.model.getParameter(`${q}.base_layer.weight`).clone();
    for (const phase of ['gated', 'projected']) {
      if (phase === 'projected') projectDiffPruning(peft);
      const adapted = peft.forward({ inputIds: batch.inputIds }).logits;
      const n0 = tf.memory().numTensors;
      peft.mergeAdapter();
      const merged = peft.forward({ inputIds: batch.inputIds }).logits;
      expect(await maxAbsDiff(merged, adapted), phase).toBe(0);
      merged.dispose();
      peft.unmergeAdapter();
      expect(await maxAbsDiff(peft.model.getParameter(`${q}.base_layer.weight`), w0), phase).toBeLessThan(1e-6);
      await peft.mergeAdapter(undefined, { safeMerge: true });
      const safe = peft.forward({ inputIds: batch.inputIds }).logits;
      expect(await maxAbsDiff(safe, adapted), phase).toBe(0);
      safe.dispose();
      peft.unmergeAdapter();
      expect(tf.memory().numTensors, phase).toBe(n0);
      // disabled: the base model
      const off = peft.disableAdapter(() => peft.forward({ inputIds: batch.inputIds }).logits);
      const base = await AutoModelForCausalLM.fromPretrained(LLAMA);
      const want = base.forward({ inputIds: batch.inputIds }).logits;
      expect(await maxAbsDiff(off, want), phase).toBeLessThan(1e-5);
      tf.dispose([off, want, adapted]);
    }
    const adapted = peft.forward({ inputIds: batch.inputIds }).logits;
    const plain = peft.mergeAndUnload();
    expect(plain.getSubmodule(q)).toBeInstanceOf(Linear);
    expect([...plain.namedParameters()].some(([k]) => k.includes('diff_pruning'))).toBe(false);
    expect(await maxAbsDiff(plain.forward({ inputIds: batch.inputIds }).logits, adapted)).toBe(0);
    tf.dispose([adapted, w0]);
  });

  it('training steps and forwards leave tf.memory() flat, in both phases', async () => {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new DiffPruningConfig({ targetModules: ['q_proj', 'down_proj'] }));
    for (const phase of [0, 1]) {
      if (phase) projectDiffPruning(peft);
      peft.train();
      trainStep(peft, batch);
      const n0 = tf.memory().numTensors;
      for (let i = 0; i < 2; i++) trainStep(peft, batch);
      for (let i = 0; i < 2; i++) {
        const o = peft.forward(batch);
        tf.dispose([o.logits, o.loss!]);
      }
      peft.eval();
      tf.dispose(peft.forward({ inputIds: batch.inputIds }).logits);
      expect(tf.memory().numTensors).toBe(n0);
    }
    const n1 = tf.memory().numTensors;
    peft.addAdapter('b', new DiffPruningConfig({ targetModules: ['q_proj'] }));
    peft.deleteAdapter('b');
    expect(tf.memory().numTensors).toBe(n1);
  });

  it('errors name the field, the module or the tensor', async () => {
    const llama = await AutoModelForCausalLM.fromPretrained(LLAMA);
    expect(() => getPeftModel(llama, new DiffPruningConfig({ diffParameters: ['bias'] }))).toThrow(/target module "model\.layers\.0\.self_attn\.q_proj" \(Linear\) has none of diffParameters \["bias"\]/);
    expect(() => new DiffPruningConfig({ density: 0 })).toThrow(/field "density"/);
    expect(() => new DiffPruningConfig({ density: 1.5 })).toThrow(/field "density"/);
    expect(() => new DiffPruningConfig({ gateStretch: [0.1, 1.1] })).toThrow(/field "gateStretch" = \[0\.1, 1\.1\] must be \[γ, ζ\] with γ < 0 and ζ > 1/);
    expect(() => new DiffPruningConfig({ diffParameters: ['weight', 'weight'] })).toThrow(/"diffParameters" lists a parameter twice/);
    expect(() => new DiffPruningConfig({ densty: 0.1 } as never)).toThrow(/unknown field "densty"/);
    expect(() => projectDiffPruning(getPeftModel(llama, new DiffPruningConfig()), 'nope')).toThrow(/adapter "nope" is not in this model/);
    // a file whose density disagrees with its tensors: the loader names the tensor and both shapes
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new DiffPruningConfig({ targetModules: ['q_proj'], density: 0.1 }));
    const out = join(tmp, 'lying');
    await peft.savePretrained(out);
    const json = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(out, 'adapter_config.json'), JSON.stringify({ ...json, density: 0.2 }));
    await expect(PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), out)).rejects.toThrow(/diff_pruning_(indices|values)\.weight" has shape \[102\] but this model needs \[205\]/);
    writeFileSync(join(out, 'adapter_config.json'), JSON.stringify(json));
    // indices outside their tensor, or not ascending: the file and the tensor are named
    const key = 'base_model.model.model.layers.1.self_attn.q_proj.diff_pruning_indices.weight';
    const good = await loadSafetensors(join(out, 'adapter_model.safetensors'));
    const k = good[key].size;
    const cases: [number[], RegExp][] = [
      [[...Array(k - 1).keys(), 1024], /index 1024 at position 101 is outside \[0, 1024\) of model\.layers\.1\.self_attn\.q_proj\.weight/],
      [[-1, ...Array(k - 1).keys()], /index -1 at position 0 is outside \[0, 1024\)/],
      [[0, 0, ...Array.from({ length: k - 2 }, (_, i) => i + 1)], /index 0 at position 1 follows 0; the indices must ascend/],
    ];
    for (const [indices, message] of cases) {
      const bad = { ...good, [key]: tf.tensor1d(indices, 'int32') };
      writeFileSync(join(out, 'adapter_model.safetensors'), await tensorsToSafetensors(bad, { metadata: { format: 'pt' }, intDtype: 'I32' }));
      bad[key].dispose();
      const err = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), out).catch((e: Error) => e);
      expect(String(err)).toMatch(message);
      expect(String(err)).toContain(`adapter_model.safetensors: tensor "${key}"`);
    }
    tf.dispose(Object.values(good));
  });
});

describe('structured diff pruning (a group gate per tensor)', () => {
  it('the L0 term is λ·Σ P(z_g ≠ 0)·Σ P(z_i ≠ 0); a closed group gate switches its tensor\'s diff off, in the forward and the projection', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(LLAMA);
    const base = model.forward(batch);
    const peft = getPeftModel(model, new DiffPruningConfig({ targetModules: ['q_proj', 'v_proj'], structured: true, sparsityPenalty: 1e-3, density: 0.1 }));
    const q = 'model.layers.0.self_attn.q_proj';
    expect(peft.model.getParameter(`${q}.diff_pruning_group_log_alpha.default.weight`).shape).toEqual([1]);
    const entries = linearNumels(peft.model).filter((_, i) => i % 7 === 0 || i % 7 === 2).reduce((a, b) => a + b, 0);
    const p5 = 1 / (1 + Math.exp(-(5 - DEFAULT_GATE.beta * Math.log(-DEFAULT_GATE.gamma / DEFAULT_GATE.zeta))));
    peft.train();
    const l0 = await scalar(tf.sub(peft.forward(batch).loss!, base.loss!));
    expect(Math.abs(l0 - 1e-3 * entries * p5 * p5) / (1e-3 * entries * p5 * p5)).toBeLessThan(1e-5);
    train(peft, 3);
    // close q_proj's group gate in layer 0: its diff is gone from the eval forward and from the projection
    const v = 'model.layers.0.self_attn.v_proj';
    const withQ = peft.forward({ inputIds: batch.inputIds }).logits;
    peft.model.getParameter(`${q}.diff_pruning_group_log_alpha.default.weight`).assign(tf.tensor1d([-10]));
    const closed = peft.forward({ inputIds: batch.inputIds }).logits;
    expect(await maxAbsDiff(closed, withQ)).toBeGreaterThan(0);
    const layer = peft.model.getSubmodule<DiffPruningLayer>(q);
    const d = layer.diff('default', 'weight', false);
    expect(await scalar(tf.max(tf.abs(d)))).toBe(0);
    d.dispose();
    const gatedOut = join(tmp, 'structured-gated');
    await peft.savePretrained(gatedOut); // saved as its projection, the group gates included
    projectDiffPruning(peft);
    expect(await scalar(tf.max(tf.abs(peft.model.getParameter(`${q}.diff_pruning_values.default.weight`))))).toBe(0);
    expect(await scalar(tf.max(tf.abs(peft.model.getParameter(`${v}.diff_pruning_values.default.weight`))))).toBeGreaterThan(0);
    expect([...peft.namedParameters()].some(([k]) => k.includes('group_log_alpha'))).toBe(false);
    const out = join(tmp, 'structured');
    await peft.savePretrained(out);
    const json = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(json.structured).toBe(true);
    expect(Buffer.compare(readFileSync(join(gatedOut, 'adapter_model.safetensors')), readFileSync(join(out, 'adapter_model.safetensors')))).toBe(0);
    const projected = peft.forward({ inputIds: batch.inputIds }).logits;
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), out);
    expect(await maxAbsDiff(again.forward({ inputIds: batch.inputIds }).logits, projected)).toBe(0);
    tf.dispose([withQ, closed, projected, base.logits, base.loss!]);
  });
});

describe('diff pruning on biases and GPT-2 Conv1D', () => {
  it('Qwen2: weights and biases get diffs; a step moves only them; save → load exact', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(QWEN);
    const peft = getPeftModel(model, new DiffPruningConfig({ targetModules: ['q_proj', 'o_proj'], diffParameters: ['weight', 'bias'], density: 0.1 }));
    const q = 'model.layers.0.self_attn.q_proj';
    expect(peft.model.getParameter(`${q}.diff_pruning_delta.default.bias`).shape).toEqual([model.config.numAttentionHeads * model.config.headDim]);
    expect(() => peft.model.getParameter('model.layers.0.self_attn.o_proj.diff_pruning_delta.default.bias')).toThrow(); // o_proj has no bias
    train(peft, 3);
    projectDiffPruning(peft);
    const adapted = peft.forward({ inputIds: batch.inputIds }).logits;
    const out = join(tmp, 'qwen');
    await peft.savePretrained(out);
    const file = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(file.tensors[`base_model.model.${q}.diff_pruning_indices.bias`].shape).toEqual([keptCount(0.1, model.config.numAttentionHeads * model.config.headDim)]);
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(QWEN), out);
    expect(await maxAbsDiff(again.forward({ inputIds: batch.inputIds }).logits, adapted)).toBe(0);
    const merged = again.mergeAndUnload();
    expect(await maxAbsDiff(merged.forward({ inputIds: batch.inputIds }).logits, adapted)).toBe(0);
    adapted.dispose();
  });

  it('GPT-2: all-linear is every Conv1D but the head; identity at init; a step moves only the diff', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(GPT2);
    const before = model.forward({ inputIds: batch.inputIds }).logits;
    const peft = getPeftModel(model, new DiffPruningConfig({ targetModules: 'all-linear' }));
    expect(peft.model.getSubmodule('transformer.h.0.attn.c_attn')).toBeInstanceOf(DiffPruningLayer);
    expect((peft.model.getSubmodule<DiffPruningLayer>('transformer.h.0.attn.c_attn')).getBaseLayer()).toBeInstanceOf(Conv1D);
    expect(await maxAbsDiff(before, peft.forward({ inputIds: batch.inputIds }).logits)).toBe(0);
    peft.train();
    const s0 = snapshot(peft);
    trainStep(peft, batch);
    expect(expectOnlyMethodChanged(s0, snapshot(peft), (k) => k.includes('.diff_pruning_delta.'))).toBe(4 * model.config.numHiddenLayers);
    before.dispose();
  });
});

describe('diff pruning with the Trainer', () => {
  it('trains a gated adapter; a checkpoint holds the projection; resuming goes on gated, bit for bit; then the projected values train', async () => {
    const data = Array.from({ length: 8 }, (_, i) => {
      const ids = [1 + i, 5 + i, 9 + i, 13 + i, 17 + i];
      return { inputIds: ids, attentionMask: ids.map(() => 1), labels: ids };
    });
    const outputDir = join(tmp, 'trainer');
    const make = async () => getPeftModel(await AutoModelForCausalLM.fromPretrained(LLAMA), new DiffPruningConfig({ targetModules: ['q_proj', 'up_proj'], density: 0.05, sparsityPenalty: 1e-3 }));
    const args = { outputDir, learningRate: 1e-2, maxSteps: 4, perDeviceTrainBatchSize: 4, saveSteps: 2, loggingSteps: 1, seed: 0 };
    const peft = await make();
    const run = new Trainer({ model: peft, args, trainDataset: data });
    await run.train();
    const losses = run.state.logHistory.filter((e) => e.loss !== undefined).map((e) => e.loss!);
    expect(losses).toHaveLength(4);
    // a checkpoint's adapter is the projection, loadable as such
    const ck = join(outputDir, 'checkpoint-2');
    expect(JSON.parse(readFileSync(join(ck, 'adapter_config.json'), 'utf8')).projected).toBe(true);
    const fromCk = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(LLAMA), ck);
    expect(fromCk.getNbTrainableParameters()[0]).toBe(0);
    // resuming from step 2 goes on with the gated diff and ends where the uninterrupted run ended
    const resumed = await make();
    const again = new Trainer({ model: resumed, args, trainDataset: data });
    await again.train({ resumeFromCheckpoint: ck });
    const a = peft.model.getParameter('model.layers.1.mlp.up_proj.diff_pruning_delta.default.weight');
    const b = resumed.model.getParameter('model.layers.1.mlp.up_proj.diff_pruning_delta.default.weight');
    expect(await maxAbsDiff(a, b)).toBe(0);
    // phase 3 with the Trainer: the projected values train
    projectDiffPruning(peft);
    const masked = new Trainer({ model: peft, args: { ...args, outputDir: join(tmp, 'trainer-masked'), saveSteps: 100 }, trainDataset: data });
    const v0 = await peft.model.getParameter('model.layers.1.mlp.up_proj.diff_pruning_values.default.weight').data();
    await masked.train();
    const v1 = await peft.model.getParameter('model.layers.1.mlp.up_proj.diff_pruning_values.default.weight').data();
    expect(Array.from(v1)).not.toEqual(Array.from(v0));
  });
});
