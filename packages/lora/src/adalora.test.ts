// AdaLoRA against HF PEFT 0.21's own outputs (packages/lora/fixtures, made by HF with its make_fixtures2.py):
// the forward (adapted, disabled, merged), the files, and a 12-step training run with the rank allocator.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PeftError, PeftModel, getPeftModel, loadSafetensors, parseSafetensors, rawToArray, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { Trainer, type Example } from '@peftjs/trainer';
import { AdaLoraConfig, AdaLoraLinear, orthogonalRegularizer, resetRankAllocator, updateAndAllocate } from './index';
import { keptDiff } from '../../../tools/testing/fixtures';

const TOL = 1e-4;
const ROOT = process.env.PEFTJS_FIXTURES_HF2 ? process.env.PEFTJS_FIXTURES_HF2.replace(/\/?$/, '/') : fileURLToPath(new URL('../fixtures/', import.meta.url));
const fixture = (name: string) => `${ROOT}${name}/`;
const META = JSON.parse(readFileSync(`${ROOT}meta.json`, 'utf8')).cases as Record<string, Record<string, any>>;
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-adalora-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function scalar(t: tf.Tensor): Promise<number> {
  const v = (await t.data())[0];
  t.dispose();
  return v;
}

/** Non-zero singular values over every AdaLoRA layer (what the fixture counts per step). */
async function nonzeroRanks(peft: PeftModel): Promise<number> {
  const es = [...peft.namedParameters()].filter(([k]) => k.includes('.lora_E.')).map(([, p]) => p);
  return scalar(tf.tidy(() => tf.addN(es.map((e) => tf.sum(tf.notEqual(e, 0).cast('int32'))))));
}

function fileTensors(path: string) {
  return parseSafetensors(new Uint8Array(readFileSync(path))).tensors;
}

describe('AdaLoRA parity with HF PEFT: llama_adalora', () => {
  it('adapted, disabled and merged logits match HF; save writes HF files; save → load is exact', async () => {
    const dir = fixture('llama_adalora');
    const t = await loadSafetensors(`${dir}tensors.safetensors`);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const peft = await PeftModel.fromPretrained(base, `${dir}adapter`);
    const q = peft.model.getSubmodule<AdaLoraLinear>('model.layers.0.self_attn.q_proj');
    expect(q).toBeInstanceOf(AdaLoraLinear);
    expect([q.r.default, q.ranknum.default, q.scaling.default]).toEqual([6, 6, 8]);

    const adapted = peft.forward(inputs).logits;
    const a = await keptDiff(adapted, t.logits_adapted, t.attention_mask);
    console.log(`llama_adalora: adapted rel ${a.rel.toExponential(2)}`);
    expect(a.rel, `adapted: max diff ${a.diff} of ${a.scale}`).toBeLessThan(TOL);
    const disabled = peft.disableAdapter(() => peft.forward(inputs).logits);
    const d = await keptDiff(disabled, t.logits_base, t.attention_mask);
    expect(d.rel, `disabled: ${d.diff}`).toBeLessThan(TOL);
    // the adapter changes the logits far beyond the tolerance, so the comparison above can fail
    expect((await keptDiff(adapted, t.logits_base, t.attention_mask)).rel).toBeGreaterThan(100 * TOL);

    const out = join(tmp, 'llama_adalora');
    await peft.savePretrained(out);
    const hfCfg = JSON.parse(readFileSync(`${dir}adapter/adapter_config.json`, 'utf8'));
    const ourCfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(ourCfg).sort()).toEqual(Object.keys(hfCfg).sort());
    for (const k of Object.keys(hfCfg)) {
      if (k === 'target_modules') expect([...ourCfg[k]].sort(), k).toEqual([...hfCfg[k]].sort());
      else expect(ourCfg[k], k).toEqual(hfCfg[k]);
    }
    const hfFile = fileTensors(`${dir}adapter/adapter_model.safetensors`);
    const ourFile = fileTensors(join(out, 'adapter_model.safetensors'));
    expect(Object.keys(ourFile).sort()).toEqual(Object.keys(hfFile).sort());
    for (const [k, v] of Object.entries(hfFile)) {
      expect(ourFile[k].shape, k).toEqual(v.shape);
      expect(Buffer.compare(Buffer.from(ourFile[k].bytes), Buffer.from(v.bytes)), k).toBe(0);
    }
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out);
    const reloaded = again.forward(inputs).logits;
    expect(await scalar(tf.max(tf.abs(tf.sub(reloaded, adapted))))).toBe(0);

    // merge → unmerge restores the weights (to rounding); merge_and_unload matches HF's merged logits
    peft.mergeAdapter();
    const m1 = peft.forward(inputs).logits;
    expect((await keptDiff(m1, t.logits_adapted, t.attention_mask)).rel).toBeLessThan(TOL);
    peft.unmergeAdapter();
    const u1 = peft.forward(inputs).logits;
    expect((await keptDiff(u1, t.logits_adapted, t.attention_mask)).rel).toBeLessThan(TOL);
    const merged = peft.mergeAndUnload();
    const mergedLogits = merged.forward(inputs).logits;
    const m = await keptDiff(mergedLogits, t.logits_merged, t.attention_mask);
    console.log(`llama_adalora: disabled rel ${d.rel.toExponential(2)}, merged rel ${m.rel.toExponential(2)}`);
    expect(m.rel, `merged: ${m.diff}`).toBeLessThan(TOL);
    expect([...merged.namedParameters()].some(([k]) => k.includes('lora_'))).toBe(false);
    tf.dispose([adapted, disabled, reloaded, m1, u1, mergedLogits, ...Object.values(t)]);
    again.dispose();
    merged.dispose();
  });

  it('forward, merge/unmerge and loss (with the regulariser) loops leave tf.memory().numTensors unchanged', async () => {
    const dir = fixture('llama_adalora');
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter`, { isTrainable: true });
    const ids = [[1, 2, 3, 4], [5, 6, 7, 8]];
    const step = () => {
      const o = peft.forward({ inputIds: ids, attentionMask: [[1, 1, 1, 1], [0, 1, 1, 1]], labels: ids });
      tf.dispose([o.logits, o.loss!]);
    };
    step();
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(n0);
    for (let i = 0; i < 3; i++) {
      peft.mergeAdapter();
      step();
      peft.unmergeAdapter();
    }
    peft.disableAdapter(step);
    expect(tf.memory().numTensors).toBe(n0);
    peft.dispose();
  });
});

describe('AdaLoRA orthogonal regulariser', () => {
  it('is orth_reg_weight · mean over every lora_A, lora_B of ‖AAᵀ − I‖_F, ‖BᵀB − I‖_F, added to the loss', async () => {
    const dir = fixture('llama_adalora');
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter`, { isTrainable: true });
    const inputs = { inputIds: [[3, 1, 4, 1, 5]], labels: [[3, 1, 4, 1, 5]] };
    const withReg = await scalar(peft.forward(inputs).loss!);
    peft.peftConfig.default.inferenceMode = true; // an adapter not being trained adds no regulariser
    const plain = await scalar(peft.forward(inputs).loss!);
    peft.peftConfig.default.inferenceMode = false;
    // the regulariser in float64 from the weights, independently of the implementation
    let sum = 0;
    let n = 0;
    for (const [k, p] of peft.namedParameters()) {
      const isA = k.includes('.lora_A.');
      if (!isA && !k.includes('.lora_B.')) continue;
      const v = await p.data();
      const [rows, cols] = p.shape as [number, number];
      const r = isA ? rows : cols;
      let fro = 0;
      for (let i = 0; i < r; i++) {
        for (let j = 0; j < r; j++) {
          let c = 0;
          if (isA) for (let x = 0; x < cols; x++) c += v[i * cols + x] * v[j * cols + x];
          else for (let x = 0; x < rows; x++) c += v[x * cols + i] * v[x * cols + j];
          fro += (c - (i === j ? 1 : 0)) ** 2;
        }
      }
      sum += Math.sqrt(fro);
      n++;
    }
    expect(n).toBe(12);
    const expected = 0.5 * (sum / n);
    expect(Math.abs(withReg - plain - expected) / expected).toBeLessThan(1e-5);
    expect(Math.abs((await scalar(orthogonalRegularizer(peft, 'default', 0.5)!)) - expected) / expected).toBeLessThan(1e-6);
    peft.dispose();
  });
});

describe('AdaLoRA training with the rank allocator reproduces HF: llama_adalora_train', () => {
  it('loss per step, non-zero ranks per step, the final rank_pattern and adapter', async () => {
    const dir = fixture('llama_adalora_train');
    const meta = META.llama_adalora_train;
    const file = fileTensors(`${dir}tensors.safetensors`);
    const rows = (k: string) => {
      const t = file[k];
      const v = Array.from(rawToArray(t));
      return Array.from({ length: t.shape[0] }, (_, i) => v.slice(i * t.shape[1], (i + 1) * t.shape[1]));
    };
    const ids = rows('input_ids');
    const mask = rows('attention_mask');
    const labels = rows('labels');
    const losses = Array.from(rawToArray(file.losses));
    const ranks = Array.from(rawToArray(file.nonzero_ranks));
    const dataset: Example[] = ids.map((r, i) => ({ inputIds: r, attentionMask: mask[i], labels: labels[i] }));

    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const peft = await PeftModel.fromPretrained(base, `${dir}adapter_init`, { isTrainable: true });
    const n0 = tf.memory().numTensors;
    const cfg = peft.peftConfig.default as AdaLoraConfig;
    expect([cfg.initR, cfg.targetR, cfg.tinit, cfg.tfinal, cfg.deltaT, cfg.totalStep]).toEqual([6, 2, 2, 3, 2, 12]);
    const ourRanks: number[] = [];
    const trainer = new Trainer({
      model: peft,
      args: {
        outputDir: join(tmp, 'train'),
        learningRate: 1e-2,
        weightDecay: 0,
        adamBeta1: 0.9,
        adamBeta2: 0.999,
        adamEpsilon: 1e-8,
        lrSchedulerType: 'constant',
        maxGradNorm: 0,
        maxSteps: meta.steps,
        perDeviceTrainBatchSize: dataset.length,
        shuffle: false,
        loggingSteps: 1,
        saveStrategy: 'no',
        progressBar: false,
      },
      trainDataset: dataset,
      callbacks: [{ onStepEnd: async () => void ourRanks.push(await nonzeroRanks(peft)) }],
    });
    await trainer.train();
    // no leaks: with the optimizer's moments freed, what is left is the model (the allocator freed its
    // averages at the final allocation)
    trainer.optimizer?.dispose();
    expect(tf.memory().numTensors).toBe(n0);
    const logs = trainer.state.logHistory.filter((e) => e.loss !== undefined && e.learningRate !== undefined);
    expect(logs).toHaveLength(meta.steps);
    const rel = logs.map((e, s) => Math.abs(e.loss! - losses[s]) / losses[s]);
    console.log(`llama_adalora_train: max rel loss diff ${Math.max(...rel).toExponential(2)}; ranks ${ourRanks.join(',')}`);
    expect(ourRanks).toEqual(ranks);
    for (let s = 0; s < meta.steps; s++) expect(rel[s], `step ${s}: ${logs[s].loss} vs HF ${losses[s]}`).toBeLessThan(TOL);
    expect(cfg.rankPattern).toEqual(meta.config.rank_pattern);

    // saved as HF saves it: rank_pattern in the config, only the kept ranks in the file
    const out = join(tmp, 'train-final');
    await trainer.saveModel(out);
    const ourCfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    const hfCfg = JSON.parse(readFileSync(`${dir}adapter_final/adapter_config.json`, 'utf8'));
    expect(ourCfg.rank_pattern).toEqual(hfCfg.rank_pattern);
    expect(Object.keys(ourCfg).sort()).toEqual(Object.keys(hfCfg).sort());
    const ours = fileTensors(join(out, 'adapter_model.safetensors'));
    const ref = fileTensors(`${dir}adapter_final/adapter_model.safetensors`);
    expect(Object.keys(ours).sort()).toEqual(Object.keys(ref).sort());
    let maxAdapter = 0;
    for (const k of Object.keys(ref)) {
      expect(ours[k].shape, k).toEqual(ref[k].shape);
      const x = rawToArray(ours[k]);
      const y = rawToArray(ref[k]);
      let dm = 0;
      let sm = 0;
      for (let i = 0; i < y.length; i++) {
        dm = Math.max(dm, Math.abs(x[i] - y[i]));
        sm = Math.max(sm, Math.abs(y[i]));
      }
      maxAdapter = Math.max(maxAdapter, dm / sm);
    }
    expect(maxAdapter).toBeLessThan(TOL);

    // the resized adapter loads (ranks 2, 2, 1, 3; ranknum stays init_r) and gives the trained model's logits
    const probe = { inputIds: ids, attentionMask: mask };
    const trained = peft.forward(probe).logits;
    const loaded = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out);
    const layers = ['0.self_attn.q_proj', '0.self_attn.v_proj', '1.self_attn.q_proj', '1.self_attn.v_proj'].map((p) => loaded.model.getSubmodule<AdaLoraLinear>(`model.layers.${p}`));
    expect(layers.map((l) => [l.r.default, l.ranknum.default])).toEqual([[2, 6], [2, 6], [1, 6], [3, 6]]);
    const again = loaded.forward(probe).logits;
    expect((await keptDiff(again, trained, tf.tensor2d(mask, undefined, 'int32'))).rel).toBeLessThan(1e-6);
    // and HF's own final adapter, loaded, gives the same logits
    const hf = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter_final`);
    const hfLogits = hf.forward(probe).logits;
    expect((await keptDiff(trained, hfLogits, tf.tensor2d(mask, undefined, 'int32'))).rel).toBeLessThan(TOL);
    tf.dispose([trained, again, hfLogits]);
    loaded.dispose();
    hf.dispose();
    peft.dispose();
  });
});

describe('AdaLoRA rank allocator on its own', () => {
  async function setup() {
    const dir = fixture('llama_adalora_train');
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter_init`, { isTrainable: true });
    const params = [...peft.namedParameters()].filter(([, p]) => p.trainable);
    const byVar = new Map(params.map(([n, p]) => [p.name, n]));
    const ids = [[3, 1, 4, 1, 5, 9, 2, 6]];
    const gradsOf = () => {
      const { value, grads } = tf.variableGrads(() => peft.forward({ inputIds: ids, labels: ids }).loss!, params.map(([, p]) => p));
      value.dispose();
      return Object.fromEntries(Object.entries(grads).map(([k, g]) => [byVar.get(k)!, g]));
    };
    return { peft, gradsOf };
  }

  it('a step gated off on the device (apply = false) changes neither the singular values nor the rank pattern', async () => {
    const { peft, gradsOf } = await setup();
    const cfg = peft.peftConfig.default as AdaLoraConfig;
    const n0 = tf.memory().numTensors;
    for (let step = 0; step < 4; step++) {
      const g = gradsOf();
      await updateAndAllocate(peft, step, g);
      tf.dispose(Object.values(g));
    }
    expect(await nonzeroRanks(peft)).toBe(24);
    // step 4 masks to a budget of 13, unless the update was gated off
    const g = gradsOf();
    const off = tf.scalar(false, 'bool');
    await updateAndAllocate(peft, 4, g, { apply: off });
    expect(await nonzeroRanks(peft)).toBe(24);
    expect(cfg.rankPattern).toBeNull();
    const on = tf.scalar(true, 'bool');
    await updateAndAllocate(peft, 4, g, { apply: on });
    expect(await nonzeroRanks(peft)).toBe(13);
    expect(Object.values(cfg.rankPattern!).flat().filter(Boolean)).toHaveLength(13);
    tf.dispose([off, on, ...Object.values(g)]);
    resetRankAllocator(peft);
    expect(tf.memory().numTensors).toBe(n0);
    peft.dispose();
  });

  it('a module whose ranks are all pruned saves as empty tensors and loads as the base module', async () => {
    const { peft } = await setup();
    const cfg = peft.peftConfig.default as AdaLoraConfig;
    const keepAll = [true, true, true, true, true, true];
    cfg.rankPattern = {
      'model.layers.0.self_attn.q_proj.lora_E': [false, false, false, false, false, false],
      'model.layers.0.self_attn.v_proj.lora_E': keepAll,
      'model.layers.1.self_attn.q_proj.lora_E': [true, false, false, false, false, true],
      'model.layers.1.self_attn.v_proj.lora_E': keepAll,
    };
    const out = join(tmp, 'rank0');
    await peft.savePretrained(out);
    const saved = fileTensors(join(out, 'adapter_model.safetensors'));
    expect(saved['base_model.model.model.layers.0.self_attn.q_proj.lora_A'].shape).toEqual([0, 32]);
    expect(saved['base_model.model.model.layers.0.self_attn.q_proj.lora_B'].shape).toEqual([32, 0]);
    expect(saved['base_model.model.model.layers.1.self_attn.q_proj.lora_E'].shape).toEqual([2, 1]);
    expect(saved['base_model.model.model.layers.1.self_attn.v_proj.lora_A'].shape).toEqual([6, 32]);
    const loaded = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${fixture('llama_adalora_train')}base`), out);
    expect(loaded.model.getSubmodule<AdaLoraLinear>('model.layers.0.self_attn.q_proj').r.default).toBe(0);
    // the pruned ranks masked in memory give what the resized file gives
    for (const [path, bits] of Object.entries(cfg.rankPattern)) {
      const E = peft.model.getParameter(`${path}.default`);
      const m = tf.tensor2d(bits.map(Number), [6, 1]);
      E.assign(tf.mul(E, m));
      m.dispose();
    }
    const inputs = { inputIds: [[3, 1, 4, 1, 5, 9, 2, 6]] };
    const a = peft.forward(inputs).logits;
    const b = loaded.forward(inputs).logits;
    expect((await keptDiff(b, a)).rel).toBeLessThan(1e-6);
    tf.dispose([a, b]);
    loaded.dispose();
    peft.dispose();
  });
});

describe('AdaLoRA registration', () => {
  it('is registered under ADALORA by @peftjs/lora and by the peftjs umbrella', async () => {
    const { getPeftMethod } = await import('@peftjs/core');
    const { adaloraMethod } = await import('./index');
    expect(getPeftMethod('ADALORA')).toBe(adaloraMethod);
    const umbrella = await import('peftjs');
    expect(umbrella.AdaLoraConfig).toBe(AdaLoraConfig);
    expect(umbrella.getPeftMethod('ADALORA').configClass).toBe(AdaLoraConfig);
  });
});

describe('AdaLoraConfig mirrors HF PEFT 0.21', () => {
  it('defaults, the file keys (deltaT) and a round trip', () => {
    const c = new AdaLoraConfig({ totalStep: 100, targetModules: ['q_proj'] });
    expect([c.initR, c.targetR, c.tinit, c.tfinal, c.deltaT, c.beta1, c.beta2, c.orthRegWeight, c.rankPattern, c.r, c.loraAlpha]).toEqual([12, 8, 0, 0, 1, 0.85, 0.85, 0.5, null, 8, 8]);
    const json = c.toJSON();
    expect(json.deltaT).toBe(1);
    expect('delta_t' in json).toBe(false);
    expect(json.peft_type).toBe('ADALORA');
    expect([json.init_r, json.target_r, json.orth_reg_weight, json.total_step]).toEqual([12, 8, 0.5, 100]);
  });

  it('refuses what HF refuses, naming the field', () => {
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(PeftError.isInstance(e)).toBe(true);
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(err(() => new AdaLoraConfig({}))).toMatch(/"totalStep"/);
    expect(err(() => new AdaLoraConfig({ totalStep: 0 }))).toMatch(/totalStep/);
    expect(err(() => new AdaLoraConfig({ totalStep: 10, tinit: 5, tfinal: 5 }))).toMatch(/"tinit".*"tfinal".*"totalStep"/);
    expect(err(() => new AdaLoraConfig({ totalStep: 10, orthRegWeight: -1 }))).toMatch(/"orthRegWeight"/);
    expect(err(() => new AdaLoraConfig({ totalStep: 10, useDora: true }))).toMatch(/"useDora"/);
    expect(err(() => new AdaLoraConfig({ totalStep: 10, targetModules: '.*q_proj', layersToTransform: [0] }))).toMatch(/layersToTransform/);
  });

  it('getPeftModel: E starts at zero so the output is the base output; lora_A/E/B trainable', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${fixture('llama_adalora')}base`);
    const ids = [[1, 2, 3, 4, 5]];
    const before = base.forward({ inputIds: ids }).logits;
    const peft = getPeftModel(base, new AdaLoraConfig({ initR: 4, targetR: 2, totalStep: 10, taskType: TaskType.CAUSAL_LM }));
    const after = peft.forward({ inputIds: ids }).logits;
    expect(await scalar(tf.max(tf.abs(tf.sub(before, after))))).toBe(0);
    const trainable = [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
    expect(trainable.length).toBe(2 * 2 * 3); // q_proj, v_proj (HF's llama default) × 2 layers × A, E, B
    expect(trainable.every((k) => /\.lora_[AEB]\.default$/.test(k))).toBe(true);
    tf.dispose([before, after]);
    peft.dispose();
  });
});

it.skipIf(!existsSync(`${ROOT}meta.json`))('fixtures are present', () => expect(existsSync(fixture('llama_adalora'))).toBe(true));
