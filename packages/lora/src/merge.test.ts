// addWeightedAdapter against HF PEFT 0.21's own outputs (packages/lora/fixtures/llama_weighted_lora, made by
// HF with make_fixtures2.py): logits of each combination, the saved files, and the random (DARE) types
// against their definition.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PeftError, PeftModel, getPeftModel, loadSafetensors, parseSafetensors, rawToArray } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig, LoraEmbedding, LoraLinear } from './index';
import { svd, svdOfProduct, truncatedSvd, type Svd } from './svd';
import { magnitudePruning, quantile, randomPruning } from './merge_utils';
import { mulberry32 } from '@peftjs/core';
import { keptDiff } from '../../../tools/testing/fixtures';

const TOL = 1e-4;
const ROOT = process.env.PEFTJS_FIXTURES_HF2 ? process.env.PEFTJS_FIXTURES_HF2.replace(/\/?$/, '/') : fileURLToPath(new URL('../fixtures/', import.meta.url));
const DIR = `${ROOT}llama_weighted_lora/`;
const META = JSON.parse(readFileSync(`${ROOT}meta.json`, 'utf8')).cases.llama_weighted_lora.combinations as Record<string, Record<string, any>>;
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-weighted-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const camel = (o: Record<string, any>) => ({
  combinationType: o.combination_type,
  svdRank: o.svd_rank,
  svdClamp: o.svd_clamp,
  density: o.density,
  majoritySignMethod: o.majority_sign_method,
});

async function load(): Promise<PeftModel> {
  const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${DIR}base`), `${DIR}adapters/a`, { adapterName: 'a' });
  await peft.loadAdapter(`${DIR}adapters/b`, 'b');
  return peft;
}

/** The LoRA linear layers holding both a and b, the sum of their ranks, and the narrowest (min(out, in)) of them. */
function shapes(peft: PeftModel) {
  const layers = [...peft.model.namedModules()].filter((e): e is [string, LoraLinear] => e[1] instanceof LoraLinear && e[1].has('a') && e[1].has('b'));
  const width = (l: LoraLinear) => Math.min(l.inFeatures, l.outFeatures);
  const narrowest = layers.reduce((x, y) => (width(y[1]) < width(x[1]) ? y : x));
  return { layers, rankSum: (peft.peftConfig.a as LoraConfig).r + (peft.peftConfig.b as LoraConfig).r, narrowest: narrowest[1], minWidth: width(narrowest[1]) } as const;
}

function fileArrays(path: string): Record<string, { shape: number[]; data: Float64Array }> {
  const out: Record<string, { shape: number[]; data: Float64Array }> = {};
  for (const [k, raw] of Object.entries(parseSafetensors(new Uint8Array(readFileSync(path))).tensors)) {
    out[k] = { shape: raw.shape, data: Float64Array.from(rawToArray(raw) as ArrayLike<number>) };
  }
  return out;
}

/** B·A of a saved layer ([m, r] · [r, n]) in float64. */
function product(f: Record<string, { shape: number[]; data: Float64Array }>, layer: string): Float64Array {
  const A = f[`${layer}.lora_A.weight`];
  const B = f[`${layer}.lora_B.weight`];
  const [m, r] = B.shape;
  const n = A.shape[1];
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let p = 0; p < r; p++) for (let j = 0; j < n; j++) out[i * n + j] += B.data[i * r + p] * A.data[p * n + j];
  return out;
}

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

describe('addWeightedAdapter parity with HF PEFT: llama_weighted_lora', () => {
  it.each(Object.keys(META))('%s: logits match HF, the saved adapter is HF\'s (config, names, shapes, values)', async (kind) => {
    const t = await loadSafetensors(`${DIR}tensors.safetensors`);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const peft = await load();
    const kw = META[kind];
    const name = `w_${kind}`;
    await peft.addWeightedAdapter(['a', 'b'], kw.weights, name, camel(kw));
    expect(peft.activeAdapter).toBe('a'); // the new adapter is added inactive, as HF does
    peft.setAdapter(name);
    const logits = peft.forward(inputs).logits;
    const d = await keptDiff(logits, t[`logits_${kind}`], t.attention_mask);
    console.log(`llama_weighted_lora ${kind}: rel ${d.rel.toExponential(2)}`);
    expect(d.rel, `${kind}: max diff ${d.diff} of ${d.scale}`).toBeLessThan(TOL);
    // the combination changes the logits far beyond the tolerance from either input adapter
    for (const other of ['a', 'b']) expect((await keptDiff(logits, t[`logits_${other}`], t.attention_mask)).rel).toBeGreaterThan(100 * TOL);
    // frozen: no parameter of the new adapter trains
    expect([...peft.namedParameters()].filter(([k, p]) => k.includes(`.${name}.`) && p.trainable)).toEqual([]);

    await peft.savePretrained(tmp, { selectedAdapters: [name] });
    const hfDir = `${DIR}weighted/${name}/`;
    const hfCfg = JSON.parse(readFileSync(`${hfDir}adapter_config.json`, 'utf8'));
    const ourCfg = JSON.parse(readFileSync(join(tmp, name, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(ourCfg).sort()).toEqual(Object.keys(hfCfg).sort());
    for (const k of Object.keys(hfCfg)) {
      if (k === 'target_modules') expect([...ourCfg[k]].sort(), k).toEqual([...hfCfg[k]].sort());
      else if (k !== 'peft_version') expect(ourCfg[k], k).toEqual(hfCfg[k]);
    }
    const hf = fileArrays(`${hfDir}adapter_model.safetensors`);
    const ours = fileArrays(join(tmp, name, 'adapter_model.safetensors'));
    expect(Object.keys(ours).sort()).toEqual(Object.keys(hf).sort());
    for (const [k, v] of Object.entries(hf)) expect(ours[k].shape, k).toEqual(v.shape);
    const layers = Object.keys(hf).filter((k) => k.endsWith('.lora_A.weight')).map((k) => k.slice(0, -'.lora_A.weight'.length));
    for (const layer of layers) {
      if (kind.endsWith('svd')) {
        // an SVD's factors are unique only up to signs: their product is what is compared
        const p = product(hf, layer);
        expect(maxDiff(product(ours, layer), p), layer).toBeLessThan(1e-5 * maxAbs(p));
      } else {
        for (const part of ['lora_A', 'lora_B']) {
          const k = `${layer}.${part}.weight`;
          expect(maxDiff(ours[k].data, hf[k].data), k).toBeLessThan(1e-6 * maxAbs(hf[k].data));
        }
      }
    }
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${DIR}base`), join(tmp, name));
    const reloaded = again.forward(inputs).logits;
    expect((await keptDiff(reloaded, logits, t.attention_mask)).diff).toBe(0);
    tf.dispose([logits, reloaded, ...Object.values(t)]);
    again.dispose();
    peft.dispose();
  });

  it('the other types against their definitions: density 1 makes DARE / TIES / pruning the plain sums; full-rank SVD reconstructs the pruned sum', async () => {
    const t = await loadSafetensors(`${DIR}tensors.safetensors`);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const peft = await load();
    const logitsOf = (name: string) => {
      peft.setAdapter(name);
      return peft.forward(inputs).logits;
    };
    await peft.addWeightedAdapter(['a', 'b'], [0.8, 0.6], 'lin', { combinationType: 'linear' });
    const { rankSum, narrowest: v, minWidth } = shapes(peft);
    await peft.addWeightedAdapter(['a', 'b'], [0.8, 0.6], 'svd4', { combinationType: 'svd', svdRank: rankSum });
    const lin = logitsOf('lin');
    const svd8 = logitsOf('svd4');
    for (const [type, ref] of [
      ['dare_linear', lin],
      ['magnitude_prune', lin],
      ['dare_linear_svd', svd8],
      ['magnitude_prune_svd', svd8],
    ] as const) {
      await peft.addWeightedAdapter(['a', 'b'], [0.8, 0.6], `x_${type}`, { combinationType: type, density: 1, svdRank: rankSum });
      const l = logitsOf(`x_${type}`);
      expect((await keptDiff(l, ref, t.attention_mask)).rel, type).toBeLessThan(TOL);
      l.dispose();
    }
    // dare_ties at density 1 is ties at density 1; ties_svd at full rank is the SVD of ties on the deltas
    await peft.addWeightedAdapter(['a', 'b'], [0.8, 0.6], 'dties1', { combinationType: 'dare_ties', density: 1, majoritySignMethod: 'frequency' });
    await peft.addWeightedAdapter(['a', 'b'], [0.8, 0.6], 'ties1f', { combinationType: 'ties', density: 1, majoritySignMethod: 'frequency' });
    const [x, y] = [logitsOf('dties1'), logitsOf('ties1f')];
    expect((await keptDiff(x, y, t.attention_mask)).rel).toBeLessThan(TOL);

    // magnitude_prune_svd at the full rank of the narrowest layer (v_proj [16, 32] here): its B·A is
    // Σᵢ wᵢ·prune(sᵢBᵢAᵢ), computed here
    await peft.addWeightedAdapter(['a', 'b'], [0.8, -0.6], 'mp', { combinationType: 'magnitude_prune_svd', density: 0.3, svdRank: minWidth });
    const expected = new Float64Array(v.outFeatures * v.inFeatures);
    for (const [n, w] of [['a', 0.8], ['b', -0.6]] as const) {
      const dw = v.getDeltaWeight(n);
      const kept = magnitudePruning(Float64Array.from(await dw.data()), 0.3);
      dw.dispose();
      kept.forEach((val, i) => (expected[i] += w * val));
    }
    const got = await tf.matMul(v.loraB.get('mp')!.weight, v.loraA.get('mp')!.weight).data();
    expect(maxDiff(got, expected)).toBeLessThan(1e-5 * maxAbs(expected));
    expect(Array.from(expected).filter((e) => e !== 0).length).toBeLessThan(0.65 * expected.length); // pruned: can fail
    tf.dispose([lin, svd8, x, y, ...Object.values(t)]);
    peft.dispose();
  });

  it('cat and full-rank svd are exact, negative weights included; an rsLoRA adapter combines to scaling 1 (its delta kept)', async () => {
    const peft = await load();
    await peft.addWeightedAdapter(['a', 'b'], [0.8, -0.6], 'c', { combinationType: 'cat' });
    const { layers, rankSum } = shapes(peft);
    await peft.addWeightedAdapter(['a', 'b'], [0.8, -0.6], 's', { combinationType: 'svd', svdRank: rankSum });
    for (const [layer, l] of layers) {
      const want = tf.tidy(() => tf.sub(tf.mul(l.getDeltaWeight('a'), 0.8), tf.mul(l.getDeltaWeight('b'), 0.6)));
      const w = await want.data();
      for (const n of ['c', 's']) {
        expect(l.scaling[n], n).toBe(1);
        const got = l.getDeltaWeight(n);
        expect(maxDiff(await got.data(), w), `${layer} ${n}`).toBeLessThan(1e-5 * maxAbs(w));
        got.dispose();
      }
      want.dispose();
    }
    peft.dispose();

    // embedding layers (lora_embedding_A [r, vocab], lora_embedding_B [dim, r]) combine the same way
    const emb = getPeftModel(await AutoModelForCausalLM.fromPretrained(`${DIR}base`), new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ['embed_tokens'], initLoraWeights: false }), 'e1');
    emb.addAdapter('e2', new LoraConfig({ r: 3, loraAlpha: 3, targetModules: ['embed_tokens'], initLoraWeights: false }));
    await emb.addWeightedAdapter(['e1', 'e2'], [0.7, -0.4], 'ec', { combinationType: 'cat' });
    await emb.addWeightedAdapter(['e1', 'e2'], [0.7, -0.4], 'es', { combinationType: 'svd', svdRank: 5 });
    const e = emb.model.getSubmodule<LoraEmbedding>('model.embed_tokens');
    const ew = tf.tidy(() => tf.sub(tf.mul(e.getDeltaWeight('e1'), 0.7), tf.mul(e.getDeltaWeight('e2'), 0.4)));
    const ewv = await ew.data();
    for (const n of ['ec', 'es']) {
      const got = e.getDeltaWeight(n);
      expect(maxDiff(await got.data(), ewv), `embedding ${n}`).toBeLessThan(1e-5 * maxAbs(ewv));
      got.dispose();
    }
    ew.dispose();
    emb.dispose();

    const rs = getPeftModel(await AutoModelForCausalLM.fromPretrained(`${DIR}base`), new LoraConfig({ r: 4, loraAlpha: 8, useRslora: true, targetModules: ['q_proj'], initLoraWeights: false }));
    await rs.addWeightedAdapter(['default'], [1], 'copy', { combinationType: 'svd' }); // one adapter: linear
    expect((rs.peftConfig.copy as LoraConfig).useRslora).toBe(false);
    const q = rs.model.getSubmodule<LoraLinear>('model.layers.0.self_attn.q_proj');
    const [d0, d1] = [q.getDeltaWeight('default'), q.getDeltaWeight('copy')];
    const ref = await d0.data();
    expect(maxDiff(await d1.data(), ref)).toBeLessThan(1e-6 * maxAbs(ref));
    tf.dispose([d0, d1]);
    rs.dispose();
  });

  it('DARE: the same seed gives the same adapter, another seed another; kept entries ≈ density, rescaled by 1/density', async () => {
    const peft = await load();
    const first = shapes(peft).layers[0][1];
    const weightsOf = async (name: string) => Float64Array.from(await first.loraA.get(name)!.weight.data());
    await peft.addWeightedAdapter(['a', 'b'], [1, 1], 'd1', { combinationType: 'dare_linear', density: 0.5, seed: 7 });
    await peft.addWeightedAdapter(['a', 'b'], [1, 1], 'd2', { combinationType: 'dare_linear', density: 0.5, seed: 7 });
    await peft.addWeightedAdapter(['a', 'b'], [1, 1], 'd3', { combinationType: 'dare_linear', density: 0.5, seed: 8 });
    expect(maxDiff(await weightsOf('d1'), await weightsOf('d2'))).toBe(0);
    expect(maxDiff(await weightsOf('d1'), await weightsOf('d3'))).toBeGreaterThan(0);
    peft.dispose();

    const n = 20000;
    for (const density of [0.1, 0.5, 0.9]) {
      const out = randomPruning(new Float64Array(n).fill(2), density, true, mulberry32(3));
      const kept = Array.from(out).filter((x) => x !== 0);
      const sd = Math.sqrt(n * density * (1 - density));
      expect(Math.abs(kept.length - n * density), `density ${density}`).toBeLessThan(5 * sd);
      expect(new Set(kept)).toEqual(new Set([2 / density]));
      const plain = randomPruning(new Float64Array(n).fill(2), density, false, mulberry32(3));
      expect(Array.from(plain).filter((x) => x !== 0).length).toBe(kept.length);
      expect(new Set(Array.from(plain).filter((x) => x !== 0))).toEqual(new Set([2]));
    }
  });

  it('refuses what HF refuses, naming the field; a failed combination leaves no adapter behind', async () => {
    const peft = await load();
    const { minWidth } = shapes(peft);
    const bad: [unknown[], unknown[], string, Record<string, unknown>, RegExp][] = [
      [['a', 'zz'], [1, 1], 'n', {}, /adapter "zz"/],
      [['a', 'b'], [1], 'n', {}, /"weights"/],
      [['a', 'b'], [1, 1], 'n', { combinationType: 'avg' }, /"combinationType"/],
      [['a', 'b'], [1, 1], 'n', { combinationType: 'ties' }, /"density"/],
      [['a', 'b'], [1, 1], 'n', { combinationType: 'ties', density: 1.5 }, /"density"/],
      [['a', 'b'], [1, 1], 'n', { combinationType: 'ties', density: 0.5, majoritySignMethod: 'most' }, /"majoritySignMethod"/],
      [['a', 'b'], [1, 1], 'n', { svdRank: 0 }, /"svdRank"/],
      [['a', 'b'], [1, 1], 'n', { svdClamp: 2 }, /"svdClamp"/],
      [['a', 'b'], [1, 1], 'a', {}, /already exists/],
      [['a', 'b'], [1, 1], 'n', { svdRank: minWidth + 1 }, new RegExp(`exceeds min\\(out, in\\) = ${minWidth}`)],
    ];
    for (const [adapters, weights, name, opts, msg] of bad) {
      const e = await peft.addWeightedAdapter(adapters as string[], weights as number[], name, opts as never).catch((x) => x);
      expect(e, JSON.stringify(opts)).toBeInstanceOf(PeftError);
      expect(e.message).toMatch(msg);
      expect(Object.keys(peft.peftConfig)).toEqual(['a', 'b']);
    }
    peft.dispose();
  });

  it('combining leaves tf.memory() flat', async () => {
    const peft = await load();
    await peft.addWeightedAdapter(['a', 'b'], [1, 1], 'warm', { combinationType: 'ties', density: 0.5 });
    peft.deleteAdapter('warm');
    const n0 = tf.memory().numTensors;
    for (const type of ['svd', 'cat', 'ties_svd', 'dare_ties'] as const) {
      await peft.addWeightedAdapter(['a', 'b'], [1, 0.5], 'x', { combinationType: type, density: 0.5, svdClamp: 0.99 });
      peft.deleteAdapter('x');
    }
    expect(tf.memory().numTensors).toBe(n0);
    peft.dispose();
  });
});

describe('svd (one-sided Jacobi, float64)', () => {
  it('reconstructs, has orthonormal factors and descending σ; the product form agrees with the full one', () => {
    const rand = mulberry32(11);
    for (const [m, n] of [[7, 5], [5, 9], [32, 72], [1, 4], [6, 6]]) {
      const a = Float64Array.from({ length: m * n }, () => rand() * 2 - 1);
      const d = svd(a, m, n);
      const k = Math.min(m, n);
      expect(d.k).toBe(k);
      for (let j = 1; j < k; j++) expect(d.s[j]).toBeLessThanOrEqual(d.s[j - 1]);
      let err = 0;
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
        let x = 0;
        for (let p = 0; p < k; p++) x += d.u[i * k + p] * d.s[p] * d.v[j * k + p];
        err = Math.max(err, Math.abs(x - a[i * n + j]));
      }
      expect(err, `[${m}, ${n}]`).toBeLessThan(1e-12);
      for (const [f, rows] of [[d.u, m], [d.v, n]] as const) {
        for (let p = 0; p < k; p++) for (let q = 0; q < k; q++) {
          let dot = 0;
          for (let i = 0; i < rows; i++) dot += f[i * k + p] * f[i * k + q];
          expect(Math.abs(dot - (p === q ? 1 : 0))).toBeLessThan(1e-12);
        }
      }
    }
    // a matrix of known singular values 3, 2, 0.5 (a rotation of diag) and a low-rank product
    const c = Math.cos(0.3), s = Math.sin(0.3);
    const known = Float64Array.from([3 * c, -2 * s, 0, 3 * s, 2 * c, 0, 0, 0, 0.5]);
    expect(Array.from(svd(known, 3, 3).s).map((x) => +x.toFixed(12))).toEqual([3, 2, 0.5]);
    const p = Float64Array.from({ length: 20 * 3 }, () => rand() - 0.5);
    const q = Float64Array.from({ length: 3 * 30 }, () => rand() - 0.5);
    const full = new Float64Array(20 * 30);
    for (let i = 0; i < 20; i++) for (let r = 0; r < 3; r++) for (let j = 0; j < 30; j++) full[i * 30 + j] += p[i * 3 + r] * q[r * 30 + j];
    const f = svd(full, 20, 30);
    const g = svdOfProduct(p, q, 20, 3, 30);
    for (let j = 0; j < 3; j++) expect(Math.abs(f.s[j] - g.s[j])).toBeLessThan(1e-12);
    expect(f.s[3]).toBeLessThan(1e-12);
    // wide matrices: the truncated SVD's rank-k product equals the full one's (a pruned low-rank sum, as *_svd sees),
    // also when the subspace iteration is cut short and the full SVD is taken instead
    const [M, N, R] = [400, 300, 8];
    const lowRank = new Float64Array(M * N);
    const lb = Float64Array.from({ length: M * R }, () => rand() - 0.5);
    const la = Float64Array.from({ length: R * N }, () => rand() - 0.5);
    for (let i = 0; i < M; i++) for (let r = 0; r < R; r++) for (let j = 0; j < N; j++) lowRank[i * N + j] += lb[i * R + r] * la[r * N + j];
    const pruned = magnitudePruning(lowRank, 0.4);
    const rankK = (d: Svd, k: number) => {
      const out = new Float64Array(d.m * d.n);
      for (let i = 0; i < d.m; i++) for (let p = 0; p < k; p++) for (let j = 0; j < d.n; j++) out[i * d.n + j] += d.u[i * d.k + p] * d.s[p] * d.v[j * d.k + p];
      return out;
    };
    const ref = rankK(svd(pruned, M, N), 6);
    for (const maxSteps of [400, 1]) {
      const tr = truncatedSvd(pruned, M, N, 6, { maxSteps });
      expect(tr.k).toBe(6);
      expect(maxDiff(rankK(tr, 6), ref), `maxSteps ${maxSteps}`).toBeLessThan(1e-9 * maxAbs(ref));
    }
    expect(quantile(Float64Array.from([1, 2, 3, 4]), 0.5)).toBe(2.5);
    expect(() => svd(Float64Array.from([1, NaN]), 1, 2)).toThrow(PeftError);
  });
});
