// Composition blocks and AdapterFusion on bottleneck adapters against their definitions. The reference is a
// fresh base model whose residual hooks (output_adapters) are replaced by a test module computing AdapterHub's
// formulas from the adapters' raw weights — none of the BottleneckLayer / composition code runs there.
// SeqBn (AdapterHub's defaults) at output_adapters of a pre-norm decoder, h the MLP's output, x its residual:
//   one adapter n:        f_n(h + x) + h + x,        f_n(z) = s·(W_up·relu(W_down·z + b_d) + b_u)
//   Stack(a, b):          o₁ = f_a(h + x) + h,  o₂ = f_b(o₁ + x) + o₁,  output o₂ + x
//   Average(a, b; w):     Σ wᵢ·(f_i(h + x) + h) + x
//   Fuse(a, b, c):        h + x + Σᵢ pᵢ·V·f_i(h + x),  p = softmax_i(Q(h + x) · K(f_i(h + x)))
//   Parallel, BatchSplit: rows of single-adapter forwards.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { Average, BatchSplit, Fuse, Module, Parallel, PeftError, Split, Stack, compositionToString, getPeftModel, manualSeed, type PeftModel, type PreTrainedModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { AdapterFusionConfig, BottleneckLayer, SeqBnConfig, addAdapterFusion, fusionOf } from './index';
import { peftError } from '../../../tools/testing/errors';

const BASE = fileURLToPath(new URL('../../lora/fixtures/llama_mixed_batch/base', import.meta.url));
const IDS = [
  [5, 17, 99, 3, 42, 7],
  [8, 1, 250, 19, 4, 60],
  [11, 12, 13, 14, 15, 16],
];

/** Three SeqBn adapters (reduction 4 on hidden 32: width 8) with random weights large enough to matter. */
async function threeAdapters(): Promise<PeftModel> {
  manualSeed(11);
  const cfg = () => new SeqBnConfig({ reductionFactor: 4 });
  const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASE), cfg(), 'a');
  peft.addAdapter('b', cfg());
  peft.addAdapter('c', cfg());
  let seed = 1000;
  for (const [k, p] of peft.namedParameters()) {
    if (!k.includes('.adapters.')) continue;
    const r = tf.randomNormal(p.shape, 0, 0.3, 'float32', seed++); // every tensor its own draw: a, b, c differ
    p.assign(r);
    r.dispose();
  }
  return peft;
}

type Def = (h: tf.Tensor, x: tf.Tensor, f: (n: string, z: tf.Tensor) => tf.Tensor, layer: BottleneckLayer) => tf.Tensor;

/** A residual hook computing `def` with the raw weights of the peft model's layer at the same path. */
class DefinitionHook extends Module {
  constructor(private readonly layer: BottleneckLayer, private readonly def: Def) {
    super();
  }
  addResidual(h: tf.Tensor, x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const f = (n: string, z: tf.Tensor) => {
        const a = this.layer.adapter(n);
        const down = tf.relu(tf.add(tf.matMul(z.reshape([-1, z.shape[2]!]), a.down.weight, false, true), a.down.bias!));
        const up = tf.add(tf.matMul(down, a.up.weight, false, true), a.up.bias!);
        return tf.mul(up, a.fixedScaling).reshape(z.shape);
      };
      return this.def(h, x, f, this.layer);
    });
  }
  forward(): tf.Tensor {
    throw new Error('call addResidual');
  }
}

async function reference(peft: PeftModel, def: Def): Promise<PreTrainedModel> {
  const ref = await AutoModelForCausalLM.fromPretrained(BASE);
  for (const [path, m] of peft.model.namedModules()) if (m instanceof BottleneckLayer) ref.setSubmodule(path, new DefinitionHook(m, def));
  return ref;
}

async function rel(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const [d, s] = tf.tidy(() => [tf.max(tf.abs(tf.sub(a, b))), tf.max(tf.abs(b))]);
  const out = (await d.data())[0] / (await s.data())[0];
  tf.dispose([d, s]);
  return out;
}

const rowsOf = (t: tf.Tensor, begin: number, size: number) => tf.slice(t, [begin], [size]);
const single = (n: string): Def => (h, x, f) => tf.add(tf.add(f(n, tf.add(h, x)), h), x);

describe('composition blocks on bottleneck adapters', () => {
  it('Stack, Average and Fuse match AdapterHub\'s formulas computed from the raw weights; flat memory', async () => {
    const peft = await threeAdapters();
    const logits = () => peft.forward({ inputIds: IDS }).logits;
    addAdapterFusion(peft, Fuse('a', 'b', 'c'));
    // give the fusion non-trivial Q, K, V so that its attention is far from uniform
    let seed = 77;
    for (const [k, p] of peft.namedParameters()) {
      if (!k.includes('adapter_fusion_layer')) continue;
      const r = tf.randomNormal(p.shape, 0, 0.4, 'float32', seed++);
      p.assign(r);
      r.dispose();
    }
    const cases: [string, Parameters<PeftModel['setActiveAdapters']>[0], Def][] = [
      ['a alone', 'a', single('a')],
      ['Stack(a, b)', Stack('a', 'b'), (h, x, f) => {
        const o1 = tf.add(f('a', tf.add(h, x)), h);
        const o2 = tf.add(f('b', tf.add(o1, x)), o1);
        return tf.add(o2, x);
      }],
      ['Average(a, b, c; 1, 2, 5)', Average('a', 'b', 'c', { weights: [1, 2, 5] }), (h, x, f) => {
        const w = [1 / 8, 2 / 8, 5 / 8];
        const outs = ['a', 'b', 'c'].map((n, i) => tf.mul(tf.add(f(n, tf.add(h, x)), h), w[i]));
        return tf.add(tf.addN(outs), x);
      }],
      ['Split(a, b; 2, 4)', Split('a', 'b', { splits: [2, 4] }), (h, x, f) => {
        const part = (n: string, b: number, k: number) => single(n)(tf.slice(h, [0, b], [-1, k]), tf.slice(x, [0, b], [-1, k]), f, undefined as never);
        return tf.concat([part('a', 0, 2), part('b', 2, 4)], 1);
      }],
      ['Fuse(a, b, c)', Fuse('a', 'b', 'c'), (h, x, f, layer) => {
        const fusion = fusionOf(layer, 'a,b,c')!;
        const lin = (name: string, t: tf.Tensor) => {
          const l = fusion.child<Module & { weight: tf.Variable; bias?: tf.Variable }>(name);
          const y = tf.matMul(t.reshape([-1, 32]), l.weight, false, true);
          return (l.bias ? tf.add(y, l.bias) : y).reshape(t.shape);
        };
        const z = tf.add(h, x);
        const ups = ['a', 'b', 'c'].map((n) => f(n, z));
        const q = lin('query', z);
        const scores = tf.stack(ups.map((u) => tf.sum(tf.mul(q, lin('key', u)), -1)), -1); // [B, T, 3]
        const p = tf.softmax(scores);
        const ctx = tf.addN(ups.map((u, i) => tf.mul(lin('value', u), tf.slice(p, [0, 0, i], [-1, -1, 1]))));
        return tf.add(tf.add(ctx, h), x);
      }],
    ];
    tf.dispose(logits());
    const before = tf.memory().numTensors;
    const got: Record<string, tf.Tensor> = {};
    for (const [label, setup, def] of cases) {
      peft.setActiveAdapters(setup);
      const ref = await reference(peft, def);
      got[label] = logits();
      const want = ref.forward({ inputIds: IDS }).logits;
      const r = await rel(got[label], want);
      console.log(`${label}: ${r.toExponential(2)} of the logits' max-abs`);
      expect(r, label).toBeLessThan(1e-5);
      want.dispose();
      ref.dispose();
    }
    // the comparisons can fail: the setups give different logits, and the adapters differ from each other
    peft.setActiveAdapters('b');
    const onlyB = logits();
    expect(await rel(onlyB, got['a alone'])).toBeGreaterThan(1e-3);
    onlyB.dispose();
    expect(await rel(got['Stack(a, b)'], got['a alone'])).toBeGreaterThan(1e-3);
    expect(await rel(got['Fuse(a, b, c)'], got['Average(a, b, c; 1, 2, 5)'])).toBeGreaterThan(1e-3);
    expect(await rel(got['Split(a, b; 2, 4)'], got['a alone'])).toBeGreaterThan(1e-3);
    tf.dispose(Object.values(got));
    expect(tf.memory().numTensors).toBe(before);
    peft.dispose();
  });

  it("Parallel and BatchSplit are rows of each adapter's own forward", async () => {
    const peft = await threeAdapters();
    const own: Record<string, tf.Tensor> = {};
    for (const n of ['a', 'b', 'c']) {
      peft.setActiveAdapters(n);
      own[n] = peft.forward({ inputIds: IDS }).logits;
    }
    peft.setActiveAdapters(Parallel('a', Stack('b', 'c')));
    const par = peft.forward({ inputIds: IDS }).logits;
    expect(par.shape[0]).toBe(6);
    peft.setActiveAdapters(Stack('b', 'c'));
    const bc = peft.forward({ inputIds: IDS }).logits;
    const [p0, p1] = [rowsOf(par, 0, 3), rowsOf(par, 3, 3)];
    expect(await rel(p0, own.a)).toBeLessThan(1e-5);
    expect(await rel(p1, bc)).toBeLessThan(1e-5);
    expect(await rel(p1, own.b)).toBeGreaterThan(1e-3);

    peft.setActiveAdapters(BatchSplit('c', 'a', { batchSizes: [2, 1] }));
    const split = peft.forward({ inputIds: IDS }).logits;
    const [s01, s2, c01, a2] = [rowsOf(split, 0, 2), rowsOf(split, 2, 1), rowsOf(own.c, 0, 2), rowsOf(own.a, 2, 1)];
    expect(await rel(s01, c01)).toBeLessThan(1e-5);
    expect(await rel(s2, a2)).toBeLessThan(1e-5);
    tf.dispose([...Object.values(own), par, bc, p0, p1, split, s01, s2, c01, a2]);
    peft.dispose();
  });

  it('generation under Stack and Fuse follows the uncached forward (each greedy token is its argmax)', async () => {
    const peft = await threeAdapters();
    addAdapterFusion(peft, Fuse('a', 'b'));
    for (const setup of [Stack('a', 'c'), Fuse('a', 'b'), BatchSplit('a', Stack('b', 'c'), { batchSizes: 1 })]) {
      peft.setActiveAdapters(setup);
      const prompt = [[5, 17, 99], [8, 1, 250]];
      const out = await peft.generate({ inputIds: prompt, maxNewTokens: 4, eosTokenId: [], padTokenId: 0 });
      for (let r = 0; r < 2; r++) {
        const seq = out[r];
        for (let t = 3; t < seq.length; t++) {
          // the row alone, uncached; BatchSplit needs both rows, so run the batch and take row r
          const ctx = out.map((o) => o.slice(0, t));
          const logits = peft.forward({ inputIds: ctx }).logits;
          const last = tf.tidy(() => tf.argMax(tf.slice(logits, [r, t - 1, 0], [1, 1, -1]).reshape([-1])));
          expect((await last.data())[0], `${compositionToString(setup)} row ${r} step ${t}`).toBe(seq[t]);
          tf.dispose([logits, last]);
        }
      }
    }
    peft.dispose();
  });

  it('errors: Fuse without a fusion layer, LoRA in a Fuse, a fusion of unknown adapters', async () => {
    const peft = await threeAdapters();
    const msg = (fn: () => unknown) => peftError(fn).message;
    expect(msg(() => peft.setActiveAdapters(Fuse('a', 'b')))).toMatch(/has no fusion layer "a,b"; add it first/);
    expect(msg(() => addAdapterFusion(peft, Fuse('a', 'zz')))).toMatch(/no adapter named "zz"/);
    peft.addAdapter('l', new LoraConfig({ r: 2, targetModules: ['q_proj'] }));
    expect(msg(() => addAdapterFusion(peft, Fuse('a', 'l')))).toMatch(/fuses bottleneck adapters; "l" is LORA/);
    expect(msg(() => new AdapterFusionConfig('dynamic', { temprature: true } as never))).toMatch(/unknown field "temprature"/);
    peft.dispose();
  });
});

describe('composition on GPT-2 (Conv1D layers, its own residual hooks)', () => {
  it('LoRA on c_attn and bottleneck adapters under Parallel and Average: rows are single forwards; Average of LoRA = merged weights', async () => {
    const { hfCase } = await import('../../../tools/testing/fixtures');
    manualSeed(21);
    const base = `${hfCase('gpt2_lora_cattn')}base`;
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(base), new LoraConfig({ r: 2, targetModules: ['c_attn'], initLoraWeights: false, fanInFanOut: true }), 'l1');
    peft.addAdapter('l2', new LoraConfig({ r: 2, targetModules: ['c_attn'], initLoraWeights: false, fanInFanOut: true }));
    peft.addAdapter('b1', new SeqBnConfig({ reductionFactor: 4, initWeights: 'bert' }));
    const ids = [[3, 4, 5, 6], [7, 8, 9, 10]];
    const one = async (names: string[]) => {
      peft.setAdapter(names);
      return peft.forward({ inputIds: ids }).logits;
    };
    const a = await one(['l1', 'b1']);
    const b = await one(['l2', 'b1']);
    peft.setActiveAdapters(Stack(Parallel('l1', 'l2'), 'b1'));
    const par = peft.forward({ inputIds: ids }).logits;
    const [p0, p1] = [tf.slice(par, [0], [2]), tf.slice(par, [2], [2])];
    expect(await rel(p0, a)).toBeLessThan(1e-5);
    expect(await rel(p1, b)).toBeLessThan(1e-5);
    expect(await rel(p0, b)).toBeGreaterThan(1e-4);
    // Average of two LoRAs = the base with 0.5·(Δ1 + Δ2) merged into c_attn (Conv1D [in, out]: HF's merge)
    peft.setActiveAdapters(Average('l1', 'l2'));
    const avg = peft.forward({ inputIds: ids }).logits;
    peft.setAdapter(['l1', 'l2']);
    const ref = await AutoModelForCausalLM.fromPretrained(base);
    for (const [path, m] of peft.model.namedModules()) {
      const layer = m as unknown as { getDeltaWeight?: (n: string) => tf.Tensor };
      if (m.constructor.name !== 'LoraLinear' || !layer.getDeltaWeight) continue;
      const conv = ref.getSubmodule(path) as unknown as { weight: tf.Variable };
      const w = tf.tidy(() => tf.add(conv.weight, tf.mul(tf.add(layer.getDeltaWeight!('l1'), layer.getDeltaWeight!('l2')), 0.5)));
      conv.weight.assign(w);
      w.dispose();
    }
    const want = ref.forward({ inputIds: ids }).logits;
    expect(await rel(avg, want)).toBeLessThan(1e-5);
    tf.dispose([a, b, par, p0, p1, avg, want]);
    ref.dispose();
    peft.dispose();
  });
});
