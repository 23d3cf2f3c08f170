// AdapterFusion's own pieces: the layer against BertFusion's formula (dynamic, static, temperature, residual
// before), the value regulariser in the training loss, its files (round trip, hostile edits), flat memory.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fuse, Linear, PeftError, getPeftModel, manualSeed, loadSafetensors, saveSafetensors, type PeftModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { AdapterFusion, AdapterFusionConfig, SeqBnConfig, addAdapterFusion, deleteAdapterFusion, fusionAttentions, listAdapterFusions, loadAdapterFusion, saveAdapterFusion } from './index';

const BASE = fileURLToPath(new URL('../../lora/fixtures/llama_mixed_batch/base', import.meta.url));
const IDS = [[5, 17, 99, 3, 42, 7], [8, 1, 250, 19, 4, 60]];

async function close(a: tf.Tensor, b: tf.Tensor, tol = 1e-5): Promise<void> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  expect(v).toBeLessThan(tol);
}

async function fusedModel(): Promise<PeftModel> {
  manualSeed(5);
  const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASE), new SeqBnConfig({ reductionFactor: 4, initWeights: 'bert' }), 'a');
  peft.addAdapter('b', new SeqBnConfig({ reductionFactor: 4, initWeights: 'bert' }));
  addAdapterFusion(peft, Fuse('a', 'b'));
  return peft;
}

describe('AdapterFusion layer', () => {
  const d = 6;
  const lin = (l: Linear, x: tf.Tensor) => tf.add(tf.matMul(x.reshape([-1, d]), l.weight, false, true), l.bias ?? tf.zeros([d])).reshape(x.shape);

  it("matches BertFusion's formula: softmax(Q(q)·K(upᵢ)/T) over adapters, Σ pᵢ·V(upᵢ) + residual; V starts at the identity", async () => {
    manualSeed(9);
    const f = new AdapterFusion(new AdapterFusionConfig('dynamic'), d);
    const value = f.child<Linear>('value');
    const w = (await value.weight.array()) as number[][];
    expect(w[0][0]).toBe(1);
    expect(w[0][1]).toBeCloseTo(1e-6, 12);
    expect(value.bias).toBeUndefined();
    const [q, ups, res] = [tf.randomNormal([2, 3, d], 0, 1, 'float32', 1), tf.randomNormal([2, 3, 4, d], 0, 1, 'float32', 2), tf.randomNormal([2, 3, d], 0, 1, 'float32', 3)];
    const before = tf.memory().numTensors;
    const got = f.fuse(q, ups, res);
    expect(tf.memory().numTensors).toBe(before + 1);
    const want = tf.tidy(() => {
      const scores = tf.sum(tf.mul(tf.expandDims(lin(f.child('query'), q), 2), lin(f.child('key'), ups)), -1);
      const p = tf.softmax(scores);
      return tf.add(tf.sum(tf.mul(tf.expandDims(p, -1), lin(value, ups)), 2), res);
    });
    await close(got, want);
    // static: no value matrix; temperature: T from 50 down by 0.05 per forward; residual_before: added to the values
    const s = new AdapterFusion(new AdapterFusionConfig('static', { temperature: true, residualBefore: true }), d);
    expect(s.maybeChild('value')).toBeUndefined();
    expect(s.T).toBe(50);
    const got2 = s.fuse(q, ups, res);
    expect(s.T).toBeCloseTo(49.95, 10);
    const want2 = tf.tidy(() => {
      const scores = tf.sum(tf.mul(tf.expandDims(lin(s.child('query'), q), 2), lin(s.child('key'), ups)), -1);
      const p = tf.softmax(tf.div(scores, 50));
      return tf.sum(tf.mul(tf.expandDims(p, -1), tf.add(ups, tf.expandDims(res, 2))), 2);
    });
    await close(got2, want2);
    for (let i = 0; i < 2000; i++) s.T = Math.max(s.T - 0.05, 1);
    expect(s.T).toBe(1);
    tf.dispose([q, ups, res, got, want, got2, want2]);
    f.dispose();
    s.dispose();
  });

  it('the config refuses unknown fields and ill-typed values, naming them', () => {
    expect(() => new AdapterFusionConfig('dynamic', { querry: true } as never)).toThrow(/unknown field "querry"/);
    expect(() => new AdapterFusionConfig('dynamic', { temperature: 'yes' } as never)).toThrow(/field "temperature" must be true or false/);
    expect(() => new AdapterFusionConfig('fast' as never)).toThrow(/unknown fusion preset "fast"/);
    expect(new AdapterFusionConfig('static').toJSON()).toEqual({ key: true, query: true, value: false, query_before_ln: false, regularization: false, residual_before: false, temperature: false, value_before_softmax: true, value_initialized: false, dropout_prob: null });
  });
});

describe('AdapterFusion on a model', () => {
  it("trainAdapterFusion trains only the fusion, and the loss carries 'dynamic''s 0.01·‖I − V‖²; flat memory per step", async () => {
    const peft = await fusedModel();
    const fuse = Fuse('a', 'b');
    // V away from the identity, so the regulariser is not zero
    const values = [...peft.namedParameters()].filter(([k]) => k.endsWith('adapter_fusion_layer.a,b.value.weight')).map(([, p]) => p);
    expect(values.length).toBe(2); // output_adapters of both layers
    for (const v of values) {
      const r = tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.1, 'float32', 4)));
      v.assign(r);
      r.dispose();
    }
    const reg = tf.tidy(() => tf.addN(values.map((v) => tf.mul(tf.sum(tf.square(tf.sub(tf.eye(32), v))), 0.01))));
    const batch = { inputIds: IDS, labels: IDS };
    peft.trainAdapter(fuse); // the adapters train, the fusion does not: no regulariser
    const plain = peft.forward(batch);
    peft.trainAdapterFusion(fuse);
    expect([...peft.namedParameters()].filter(([, p]) => p.trainable).every(([k]) => k.includes('.adapter_fusion_layer.a,b.'))).toBe(true);
    const withReg = peft.forward(batch);
    const diff = tf.sub(withReg.loss!, plain.loss!);
    await close(diff, reg, 1e-4);
    const regValue = (await reg.data())[0];
    expect(regValue).toBeGreaterThan(0.01);
    tf.dispose([plain.logits, plain.loss!, withReg.logits, withReg.loss!, diff, reg]);

    // a training step: gradients reach the fusion only; memory flat across steps
    const opt = tf.train.adam(1e-2);
    const vars = peft.parameters().filter((p) => p.trainable);
    const step = () => tf.dispose(opt.minimize(() => peft.forward(batch).loss!, true, vars)!);
    step();
    const before = tf.memory().numTensors;
    step();
    step();
    expect(tf.memory().numTensors).toBe(before);
    opt.dispose();
    peft.dispose();
  });

  it('saves and loads as its own folder; hostile files are refused naming the file and tensor', async () => {
    const peft = await fusedModel();
    const fuse = Fuse('a', 'b');
    let seed = 31;
    for (const [k, p] of peft.namedParameters()) {
      if (!k.includes('adapter_fusion_layer')) continue;
      const r = tf.randomNormal(p.shape, 0, 0.3, 'float32', seed++);
      p.assign(r);
      r.dispose();
    }
    peft.setActiveAdapters(fuse);
    const want = peft.forward({ inputIds: IDS }).logits;
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-fusion-'));
    await saveAdapterFusion(peft, dir, fuse);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_fusion_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ adapter_names: ['a', 'b'], name: 'a,b', hidden_size: 32 });
    const file = await loadSafetensors(join(dir, 'adapter_fusion.safetensors'));
    expect(Object.keys(file).sort()).toContain('base_model.model.model.layers.0.output_adapters.adapter_fusion_layer.query.weight');
    tf.dispose(Object.values(file));

    deleteAdapterFusion(peft, fuse);
    expect(listAdapterFusions(peft)).toEqual([]);
    expect(() => peft.setActiveAdapters(fuse)).toThrow(/has no fusion layer "a,b"/);
    const back = await loadAdapterFusion(peft, dir);
    expect(back.name).toBe('a,b');
    peft.setActiveAdapters(back);
    const got = peft.forward({ inputIds: IDS }).logits;
    await close(got, want, 1e-7);

    // hostile edits
    deleteAdapterFusion(peft, fuse);
    const bad = mkdtempSync(join(tmpdir(), 'peftjs-fusion-bad-'));
    const t = await loadSafetensors(join(dir, 'adapter_fusion.safetensors'));
    const key = 'base_model.model.model.layers.1.output_adapters.adapter_fusion_layer.key.weight';
    const edit = async (tensors: Record<string, tf.Tensor>, config: object) => {
      await saveSafetensors(join(bad, 'adapter_fusion.safetensors'), tensors);
      writeFileSync(join(bad, 'adapter_fusion_config.json'), JSON.stringify(config));
    };
    const fails = async (re: RegExp) => {
      const e = await loadAdapterFusion(peft, bad).catch((x) => x);
      expect(PeftError.isInstance(e), String(e)).toBe(true);
      expect(e.message).toMatch(re);
      expect(listAdapterFusions(peft)).toEqual([]); // nothing half-loaded stays
    };
    const { [key]: dropped, ...missing } = t;
    await edit(missing, cfg);
    await fails(/adapter_fusion\.safetensors: missing tensor ".*layers\.1\.output_adapters\.adapter_fusion_layer\.key\.weight"/);
    const wrong = tf.zeros([32, 8]);
    await edit({ ...t, [key]: wrong }, cfg);
    await fails(/tensor ".*layers\.1.*key\.weight" has shape \[32,8\] but this model needs \[32,32\]/);
    await edit(t, { ...cfg, config: { ...cfg.config, temprature: true } });
    await fails(/adapter_fusion_config\.json: unknown fusion config field "temprature"/);
    await edit(t, { ...cfg, adapter_names: ['a', 'zz'] });
    await fails(/field "name" is "a,b" but adapter_names give "a,zz"/);
    await edit(t, { ...cfg, adapter_names: ['a', 'zz'], name: 'a,zz' });
    await fails(/no adapter named "zz"/);
    tf.dispose([...Object.values(t), wrong, want, got, dropped]);
    peft.dispose();
  });
});

describe('AdapterFusion placement', () => {
  it('fused adapters must share their placements', async () => {
    manualSeed(6);
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASE), new SeqBnConfig({ reductionFactor: 4, mhAdapter: true }), 'a');
    peft.addAdapter('b', new SeqBnConfig({ reductionFactor: 4 }));
    addAdapterFusion(peft, Fuse('a', 'b')); // only where both are: output_adapters
    expect(() => peft.setActiveAdapters(Fuse('a', 'b'))).toThrow(/attention_adapters holds only "a" of Fuse\[a, b\]; fused adapters must share their placements/);
    peft.dispose();
  });
});

describe('fusionAttentions', () => {
  it("returns each fusion layer's attention over the adapters ([B, T, N], rows summing to 1) beside the forward's result", async () => {
    const peft = await fusedModel();
    peft.setActiveAdapters(Fuse('a', 'b'));
    tf.dispose(peft.forward({ inputIds: IDS }).logits);
    const before = tf.memory().numTensors;
    const { result, attentions } = fusionAttentions(peft, () => peft.forward({ inputIds: IDS }));
    expect(Object.keys(attentions)).toEqual(['a,b']);
    const byLayer = attentions['a,b'];
    expect(Object.keys(byLayer).sort()).toEqual(['base_model.model.model.layers.0.output_adapters', 'base_model.model.model.layers.1.output_adapters']);
    for (const p of Object.values(byLayer)) {
      expect(p.shape).toEqual([2, 6, 2]);
      const s = tf.sum(p, -1);
      const one = tf.onesLike(s);
      await close(s, one);
      tf.dispose([s, one]);
    }
    // recording stops with fn: a later forward records nothing
    const fusion = [...peft.namedModules()].map(([, m]) => m).find((m): m is AdapterFusion => m instanceof AdapterFusion)!;
    expect(fusion.recorder).toBeNull();
    tf.dispose([result.logits, ...Object.values(byLayer)]);
    expect(tf.memory().numTensors).toBe(before);
    // deleting a fused adapter deletes its fusion layers (and their tensors)
    const n = tf.memory().numTensors;
    const fusionTensors = [...peft.namedParameters()].filter(([k]) => k.includes('adapter_fusion_layer')).length;
    const bTensors = [...peft.namedParameters()].filter(([k]) => k.includes('.adapters.b.')).length;
    peft.deleteAdapter('b');
    expect(listAdapterFusions(peft)).toEqual([]);
    expect(tf.memory().numTensors).toBe(n - fusionTensors - bTensors);
    peft.dispose();
  });
});
