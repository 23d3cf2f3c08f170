import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { KVCache, Module, loadSafetensors } from '@peftjs/core';
import { AutoModelForCausalLM, type CausalLMBase } from '@peftjs/models';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';
import { arr, maxAbsDiff } from './test-helpers';

const CASES = ['llama_lora_qv', 'qwen2_lora', 'gpt2_lora_cattn', 'llama_bf16_weights'];

describe('base logits match HF transformers 5.17 (fixtures)', () => {
  for (const name of CASES) {
    it(name, async () => {
      const model = await AutoModelForCausalLM.fromPretrained(`${hfCase(name)}base`);
      const t = await caseTensors(name);
      const { logits } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
      const r = await keptDiff(logits, t.logits_base, t.attention_mask);
      console.log(`${name}: max relative logits difference ${r.rel.toExponential(2)} (max |diff| ${r.diff.toExponential(2)}, max |ref| ${r.scale.toFixed(4)})`);
      expect(r.rel).toBeLessThanOrEqual(1e-4);
      logits.dispose();
      tf.dispose(Object.values(t));
      model.dispose();
    });
  }
});

describe('left-padding queries (they see no key) get a zero attention output, as torch SDPA', () => {
  for (const name of CASES) {
    it(`${name}: logits match HF at every position, masked ones included`, async () => {
      const model = await AutoModelForCausalLM.fromPretrained(`${hfCase(name)}base`);
      const t = await caseTensors(name);
      const { logits } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
      const r = await keptDiff(logits, t.logits_base);
      expect(r.rel).toBeLessThanOrEqual(1e-4);
      // the same through a tensor mask (no array to inspect)
      const again = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask.toInt() });
      expect((await keptDiff(again.logits, t.logits_base)).rel).toBeLessThanOrEqual(1e-4);
      tf.dispose([logits, again.logits, ...Object.values(t)]);
      model.dispose();
    });
  }

  for (const name of ['llama_lora_train', 'llama_lora_train_sched']) {
    it(`${name}: the loss of the base model equals HF's first training loss (B = 0)`, async () => {
      const model = await AutoModelForCausalLM.fromPretrained(`${hfCase(name)}base`);
      const t = await caseTensors(name);
      const { logits, loss } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask, labels: t.labels });
      const ours = (await loss!.data())[0];
      const ref = (await t.losses.data())[0];
      expect(Math.abs(ours - ref) / ref).toBeLessThan(1e-5);
      tf.dispose([logits, loss!, ...Object.values(t)]);
      model.dispose();
    });
  }
});

describe('module tree and parameters', () => {
  for (const name of CASES) {
    it(`${name}: parameter names are exactly the checkpoint's (HF names)`, async () => {
      const model = await AutoModelForCausalLM.fromPretrained(`${hfCase(name)}base`);
      const file = await loadSafetensors(`${hfCase(name)}base/model.safetensors`);
      const fileNames = Object.keys(file).filter((n) => !/\.attn\.(bias|masked_bias)$/.test(n)).sort();
      expect([...model.namedParameters()].map(([n]) => n).sort()).toEqual(fileNames);
      tf.dispose(Object.values(file));
      model.dispose();
    });
  }

  it('llama: HF module paths, GQA shapes, no biases', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    const paths = new Set([...model.namedModules()].map(([p]) => p));
    for (const p of ['model.embed_tokens', 'model.norm', 'lm_head', 'model.layers.1.input_layernorm', 'model.layers.1.post_attention_layernorm']) expect(paths).toContain(p);
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) expect(paths).toContain(`model.layers.0.self_attn.${p}`);
    for (const p of ['gate_proj', 'up_proj', 'down_proj']) expect(paths).toContain(`model.layers.0.mlp.${p}`);
    const c = model.config;
    expect(model.getParameter('model.layers.0.self_attn.k_proj.weight').shape).toEqual([c.numKeyValueHeads * c.headDim, c.hiddenSize]);
    expect(() => model.getParameter('model.layers.0.self_attn.q_proj.bias')).toThrow();
    expect(model.outputHeadNames).toEqual(['lm_head']);
    expect(model.taskType).toBe('CAUSAL_LM');
    expect(model.getInputEmbeddings()).toBe(model.getSubmodule('model.embed_tokens'));
    expect(c.raw.model_type).toBe('llama');
    model.dispose();
  });

  it('qwen2: q/k/v biases, no o_proj bias, tied embeddings are one parameter', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
    for (const p of ['q_proj', 'k_proj', 'v_proj']) expect(model.getParameter(`model.layers.0.self_attn.${p}.bias`)).toBeTruthy();
    expect(() => model.getParameter('model.layers.0.self_attn.o_proj.bias')).toThrow();
    expect(model.config.tieWordEmbeddings).toBe(true);
    expect(model.getParameter('lm_head.weight')).toBe(model.getParameter('model.embed_tokens.weight'));
    const names = [...model.namedParameters()].map(([n]) => n);
    expect(names).not.toContain('lm_head.weight');
    model.dispose();
  });

  it('gpt2: Conv1D layers under HF names, lm_head tied to wte', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
    const d = model.config.hiddenSize;
    expect(model.getParameter('transformer.h.0.attn.c_attn.weight').shape).toEqual([d, 3 * d]);
    expect(model.getParameter('lm_head.weight')).toBe(model.getParameter('transformer.wte.weight'));
    expect(model.getInputEmbeddings()).toBe(model.getSubmodule('transformer.wte'));
    model.dispose();
  });

  it('children are looked up at call time: replacing q_proj changes the forward', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    const ids = [[5, 6, 7, 8]];
    const before = model.forward({ inputIds: ids }).logits;
    const path = 'model.layers.0.self_attn.q_proj';
    const orig = model.getSubmodule<Module & { forward(x: tf.Tensor): tf.Tensor }>(path);
    class Scaled extends Module {
      calls = 0;
      forward(x: tf.Tensor) {
        this.calls++;
        return tf.mul(orig.forward(x), 3);
      }
    }
    const wrapper = new Scaled();
    wrapper.registerModule('base_layer', orig);
    model.setSubmodule(path, wrapper);
    const after = model.forward({ inputIds: ids }).logits;
    expect(wrapper.calls).toBe(1);
    expect(await maxAbsDiff(before, after)).toBeGreaterThan(1e-4);
    model.setSubmodule(path, orig);
    const back = model.forward({ inputIds: ids }).logits;
    expect(await maxAbsDiff(before, back)).toBe(0);
    tf.dispose([before, after, back]);
    model.dispose();
  });
});

describe('forward semantics', () => {
  let llama: CausalLMBase;
  let gpt2: CausalLMBase;
  let qwen: CausalLMBase;
  beforeAll(async () => {
    llama = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    gpt2 = await AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
    qwen = await AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
  });
  afterAll(() => [llama, gpt2, qwen].forEach((m) => m.dispose()));

  const models = () => ({ llama, gpt2, qwen });

  for (const key of ['llama', 'gpt2', 'qwen'] as const) {
    it(`${key}: KV-cache decoding gives the full forward's logits (with left padding)`, async () => {
      const model = models()[key];
      const t = await caseTensors('llama_lora_qv');
      const ids = (await arr(t.input_ids)) as number[][];
      const mask = (await arr(t.attention_mask)) as number[][];
      const T = ids[0].length;
      const full = model.forward({ inputIds: ids, attentionMask: mask }).logits;
      const cache = new KVCache();
      const t0 = 4;
      const steps: tf.Tensor[] = [];
      const first = model.forward({ inputIds: ids.map((r) => r.slice(0, t0)), attentionMask: mask.map((r) => r.slice(0, t0)), pastKeyValues: cache, useCache: true });
      expect(first.pastKeyValues).toBe(cache);
      steps.push(first.logits);
      for (let i = t0; i < T; i++) {
        expect(cache.length).toBe(i);
        const out = model.forward({ inputIds: ids.map((r) => [r[i]]), attentionMask: mask.map((r) => r.slice(0, i + 1)), pastKeyValues: cache, useCache: true });
        steps.push(out.logits);
      }
      const inc = tf.concat(steps, 1);
      const r = await keptDiff(inc, full, t.attention_mask);
      expect(r.rel).toBeLessThan(1e-5);
      cache.dispose();
      tf.dispose([full, inc, ...steps, ...Object.values(t)]);
    });
  }

  it('useCache without a cache returns a new one; a past without useCache is read, not modified', async () => {
    const ids = [[3, 4, 5, 6, 7, 8]];
    const out = llama.forward({ inputIds: [[3, 4, 5]], useCache: true });
    const cache = out.pastKeyValues!;
    expect(cache).toBeInstanceOf(KVCache);
    expect(cache.length).toBe(3);
    const next = llama.forward({ inputIds: [[6, 7, 8]], pastKeyValues: cache });
    expect(cache.length).toBe(3);
    expect(next.pastKeyValues).toBeUndefined();
    const full = llama.forward({ inputIds: ids }).logits;
    expect(await maxAbsDiff(tf.slice(full, [0, 3, 0], [1, 3, -1]), next.logits)).toBeLessThan(1e-5);
    cache.dispose();
    tf.dispose([out.logits, next.logits, full]);
  });

  it('position ids default to pastLength + arange(T), not derived from the mask', async () => {
    const ids = [[9, 10, 11, 12]];
    const a = llama.forward({ inputIds: ids, attentionMask: [[0, 1, 1, 1]] }).logits;
    const b = llama.forward({ inputIds: ids, attentionMask: [[0, 1, 1, 1]], positionIds: [[0, 1, 2, 3]] }).logits;
    const c = llama.forward({ inputIds: ids, attentionMask: [[0, 1, 1, 1]], positionIds: [[1, 0, 2, 5]] }).logits;
    expect(await maxAbsDiff(a, b)).toBe(0);
    expect(await maxAbsDiff(a, c)).toBeGreaterThan(1e-4);
    // only relative positions matter to RoPE: shifting every position keeps the logits
    const d = llama.forward({ inputIds: ids, positionIds: [[7, 8, 9, 10]] }).logits;
    const e = llama.forward({ inputIds: ids }).logits;
    expect(await maxAbsDiff(d, e)).toBeLessThan(1e-4);
    tf.dispose([a, b, c, d, e]);
  });

  it('inputsEmbeds gives the same logits as inputIds', async () => {
    for (const m of [llama, gpt2]) {
      const ids = [[1, 2, 3, 4, 5]];
      const emb = tf.tidy(() => m.getInputEmbeddings().forward(tf.tensor2d(ids, undefined, 'int32')));
      const a = m.forward({ inputIds: ids }).logits;
      const b = m.forward({ inputsEmbeds: emb }).logits;
      expect(await maxAbsDiff(a, b)).toBe(0);
      tf.dispose([emb, a, b]);
    }
  });

  it('logitsToKeep computes only the last positions', async () => {
    const ids = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]];
    const a = llama.forward({ inputIds: ids }).logits;
    const b = llama.forward({ inputIds: ids, logitsToKeep: 1 } as never).logits;
    expect(b.shape).toEqual([2, 1, llama.config.vocabSize]);
    expect(await maxAbsDiff(tf.slice(a, [0, 4, 0], [2, 1, -1]), b)).toBeLessThan(1e-6);
    tf.dispose([a, b]);
  });

  for (const key of ['llama', 'gpt2'] as const) {
    it(`${key}: loss is the mean cross-entropy of shifted labels, -100 ignored (computed by hand)`, async () => {
      const model = models()[key];
      const ids = [[11, 22, 33, 44, 55, 66], [7, 8, 9, 10, 11, 12]];
      const labels = [[11, 22, -100, 44, 55, 66], [-100, -100, 9, 10, 11, -100]];
      const { logits, loss } = model.forward({ inputIds: ids, labels });
      const L = (await arr(logits)) as unknown as number[][][];
      let sum = 0;
      let n = 0;
      for (let b = 0; b < 2; b++) {
        for (let t = 0; t + 1 < 6; t++) {
          const y = labels[b][t + 1];
          if (y === -100) continue;
          const row = L[b][t];
          const mx = Math.max(...row);
          const lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
          sum += lse - row[y];
          n++;
        }
      }
      expect(n).toBe(7);
      expect(loss).toBeDefined();
      expect(loss!.shape).toEqual([]);
      expect(Math.abs((await loss!.data())[0] - sum / n)).toBeLessThan(1e-5);
      tf.dispose([logits, loss!]);
    });
  }

  it('loss gradients flow to the attention projections (backward kernels exist on this backend)', async () => {
    const ids = [[1, 2, 3, 4, 5, 6]];
    const q = llama.getParameter('model.layers.0.self_attn.q_proj.weight');
    const v = llama.getParameter('model.layers.1.self_attn.v_proj.weight');
    const { value, grads } = tf.variableGrads(() => {
      const out = llama.forward({ inputIds: ids, attentionMask: [[0, 1, 1, 1, 1, 1]], labels: ids });
      out.logits.dispose();
      return out.loss!;
    }, [q, v]);
    const gq = await grads[q.name].data();
    expect(Number.isFinite((await value.data())[0])).toBe(true);
    expect(gq.every(Number.isFinite)).toBe(true);
    expect(Math.max(...Array.from(gq, Math.abs))).toBeGreaterThan(0);
    // finite-difference check of one entry
    const eps = 1e-2;
    const lossAt = async (delta: number) => {
      const w0 = q.clone();
      const bumped = tf.tidy(() => tf.add(q, tf.scatterND([[0, 0]], [delta], q.shape)));
      q.assign(bumped);
      const out = llama.forward({ inputIds: ids, attentionMask: [[0, 1, 1, 1, 1, 1]], labels: ids });
      const l = (await out.loss!.data())[0];
      tf.dispose([out.logits, out.loss!, bumped]);
      q.assign(w0);
      w0.dispose();
      return l;
    };
    const fd = ((await lossAt(eps)) - (await lossAt(-eps))) / (2 * eps);
    expect(Math.abs(fd - gq[0])).toBeLessThan(1e-3 + 1e-2 * Math.abs(gq[0]));
    tf.dispose([value, ...Object.values(grads)]);
  });

  it('no tensor leaks across backward passes', async () => {
    for (const m of [llama, gpt2]) {
      const vars = [...m.namedParameters()].filter(([n]) => /(q_proj|v_proj|c_attn)\.weight$/.test(n)).map(([, p]) => p);
      const step = () => {
        const { value, grads } = tf.variableGrads(() => {
          const out = m.forward({ inputIds: [[1, 2, 3, 4]], attentionMask: [[0, 1, 1, 1]], labels: [[1, 2, 3, 4]] });
          out.logits.dispose();
          return out.loss!;
        }, vars);
        tf.dispose([value, ...Object.values(grads)]);
      };
      step();
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) step();
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('training mode: GPT-2 dropout is active only in train()', async () => {
    const model = AutoModelForCausalLM.fromConfig({ ...(gpt2.config.raw as object), resid_pdrop: 0.5, embd_pdrop: 0.5, attn_pdrop: 0.5 });
    const ids = [[1, 2, 3, 4]];
    const a = model.forward({ inputIds: ids }).logits;
    const b = model.forward({ inputIds: ids }).logits;
    expect(await maxAbsDiff(a, b)).toBe(0);
    model.train();
    const c = model.forward({ inputIds: ids }).logits;
    expect(await maxAbsDiff(a, c)).toBeGreaterThan(0);
    model.eval();
    tf.dispose([a, b, c]);
    model.dispose();
  });

  it('no tensor leaks across 5 forwards (with mask, labels, cache)', async () => {
    for (const m of [llama, gpt2, qwen]) {
      const ids = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]];
      const mask = [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]];
      const before = tf.memory().numTensors;
      for (let i = 0; i < 5; i++) {
        const out = m.forward({ inputIds: ids, attentionMask: mask, labels: ids, positionIds: i % 2 ? [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]] : undefined });
        tf.dispose([out.logits, out.loss!]);
        const c = m.forward({ inputIds: ids, useCache: true });
        const d = m.forward({ inputIds: [[1], [2]], pastKeyValues: c.pastKeyValues, useCache: true });
        c.pastKeyValues!.dispose();
        tf.dispose([c.logits, d.logits]);
      }
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('fromConfig builds a randomly initialized model of the config shape (transformers 4 rope_theta)', async () => {
    const raw = { ...llama.config.raw } as Record<string, unknown>;
    delete raw.rope_parameters;
    raw.rope_theta = 10000;
    const m = AutoModelForCausalLM.fromConfig(raw);
    expect([...m.namedParameters()].map(([n, p]) => `${n}:${p.shape}`)).toEqual([...llama.namedParameters()].map(([n, p]) => `${n}:${p.shape}`));
    // same weights as the loaded model → same logits: the rope theta is read from either place
    for (const [n, p] of llama.namedParameters()) m.getParameter(n).assign(p);
    const a = m.forward({ inputIds: [[1, 2, 3]] }).logits;
    const b = llama.forward({ inputIds: [[1, 2, 3]] }).logits;
    expect(await maxAbsDiff(a, b)).toBe(0);
    tf.dispose([a, b]);
    m.dispose();
  });
});

describe('attention gradient with explicit transposes', () => {
  it('equals tfjs autodiff (GQA, mask) for q, k and v', async () => {
    const { attention, setAttentionCustomGrad } = await import('./common');
    const [b, h, kv, t, s, d] = [2, 6, 3, 4, 7, 8];
    const q = tf.randomNormal([b, h, t, d], 0, 1, 'float32', 1);
    const k = tf.randomNormal([b, kv, s, d], 0, 1, 'float32', 2);
    const v = tf.randomNormal([b, kv, s, d], 0, 1, 'float32', 3);
    const w = tf.randomNormal([b, t, h * d], 0, 1, 'float32', 4);
    const mask = tf.tidy(() => tf.mul(tf.sub(1, tf.randomUniform([b, 1, t, s], 0, 1, 'float32', 5).greater(0.3).toFloat()), -1e9));
    const run = (custom: boolean) => {
      setAttentionCustomGrad(custom);
      const g = tf.grads((a: tf.Tensor, bb: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(attention(a, bb, c, mask), w)))([q, k, v]);
      setAttentionCustomGrad(undefined);
      return g;
    };
    const ref = run(false);
    const ours = run(true);
    for (let i = 0; i < 3; i++) expect(await maxAbsDiff(ref[i], ours[i])).toBeLessThan(1e-4);
    tf.dispose([q, k, v, w, mask, ...ref, ...ours]);
  });
});
