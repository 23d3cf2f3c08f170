// Bottleneck adapters against their definitions: (1) an independent restatement of AdapterHub's math in this
// test, hooked on a second copy of the base model, for every case of tools/reference/adapterhub_ref.py (logits
// and one step's gradients); (2) the PyTorch reference's fixtures (packages/adapters/fixtures/adapterhub/), made
// by that script on the device machine.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Module, PeftModel, getPeftModel, loadSafetensors, type PreTrainedModel, type ResidualHook } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { AdapterConfig, type AdapterConfigInput } from './index';
import { hfCase, keptDiff } from '../../../tools/testing/fixtures';

const TOL = Number(process.env.PEFTJS_TOL ?? 1e-4);
const BASES = { llama: `${hfCase('llama_lora_qv')}base`, gpt2: `${hfCase('gpt2_lora_cattn')}base` };
const FIXTURES = process.env.PEFTJS_FIXTURES_ADAPTERHUB ?? fileURLToPath(new URL('../fixtures/adapterhub/', import.meta.url));

/** The cases of tools/reference/adapterhub_ref.py, in peftjs's camelCase (over SeqBnConfig's defaults). */
const CASES: Record<string, AdapterConfigInput> = {
  seq_bn: { reductionFactor: 4 },
  double_seq_bn: { mhAdapter: true, adapterAct: 'swish', originalLnBefore: false, reductionFactor: 4 },
  par_bn: { parallel: true, originalLnBefore: false, reductionFactor: 2, scaling: 4.0 },
  gated_learned: { mhAdapter: true, useGating: true, scaling: 'learned', adapterAct: 'gelu', reductionFactor: 4 },
  seq_bn_norms: { lnBefore: true, lnAfter: true, adapterResidualBeforeLn: true, residualBeforeLn: false, scaling: 'channel', adapterAct: 'tanh', adapterSize: 5, leaveOut: [0] },
  par_bn_gated: { parallel: true, originalLnBefore: false, mhAdapter: true, useGating: true, scaling: 'channel', lnBefore: true, reductionFactor: 2 },
};

const ids = [[5, 9, 14, 3, 27, 8, 2], [0, 0, 11, 6, 19, 2, 40]];
const mask = [[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]];
const labels = [[5, 9, 14, 3, 27, 8, 2], [-100, -100, 11, 6, 19, 2, 40]];

/**
 * AdapterHub's bottleneck layer (layer_norm None) written out as one formula, from its definitions, on the
 * tensors `w` (keys: adapter_down.weight …): the check that BottleneckLayer's pieces compose to it.
 *   parallel: out = LN_after?(gate · s · up(act(down(LN_before?(r))))) + h + [original_ln_after] r
 *   serial:   x = [original_ln_before] ? h + r : h;  skip = residual_before_ln ? h : x;  a = gate · s · up(act(down(LN_before?(x))))
 *             o = adapter_residual_before_ln ? LN_after?(a + skip) : LN_after?(a) + skip;  out = o + [original_ln_after] r
 */
class DefinitionHook extends Module implements ResidualHook {
  constructor(
    readonly w: Record<string, tf.Variable>,
    readonly c: AdapterConfig,
  ) {
    super();
  }
  private lin(x: tf.Tensor, p: string): tf.Tensor {
    const W = this.w[`${p}.weight`];
    const [b, t, d] = x.shape;
    return tf.add(tf.matMul(x.reshape([b * t, d]), W, false, true).reshape([b, t, W.shape[0]]), this.w[`${p}.bias`]);
  }
  private ln(x: tf.Tensor, p: string): tf.Tensor {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), this.w[`${p}.weight`]), this.w[`${p}.bias`]);
  }
  private act(x: tf.Tensor): tf.Tensor {
    const a = this.c.adapterAct;
    if (a === 'relu') return tf.maximum(x, 0);
    if (a === 'tanh') return tf.tanh(x);
    if (a === 'gelu') return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2))));
    return tf.div(x, tf.add(1, tf.exp(tf.neg(x))));
  }
  private branch(x: tf.Tensor): tf.Tensor {
    const c = this.c;
    let a = this.lin(this.act(this.lin(c.lnBefore ? this.ln(x, 'adapter_norm_before') : x, 'adapter_down')), 'adapter_up');
    a = tf.mul(a, typeof c.scaling === 'number' ? c.scaling : this.w.scaling);
    if (c.useGating) a = tf.mul(a, tf.mean(tf.sigmoid(this.lin(x, 'gate')), 1, true));
    return a;
  }
  addResidual(h: tf.Tensor, r: tf.Tensor): tf.Tensor {
    const c = this.c;
    if (c.parallel) {
      let a = this.branch(r);
      if (c.lnAfter) a = this.ln(a, 'adapter_norm_after');
      const out = tf.add(a, h);
      return c.originalLnAfter ? tf.add(out, r) : out;
    }
    const x = c.originalLnBefore ? tf.add(h, r) : h;
    const skip = c.residualBeforeLn ? h : x;
    const a = this.branch(x);
    const after = (t: tf.Tensor) => (c.lnAfter ? this.ln(t, 'adapter_norm_after') : t);
    const o = c.adapterResidualBeforeLn ? after(tf.add(a, skip)) : tf.add(after(a), skip);
    return c.originalLnAfter ? tf.add(o, r) : o;
  }
  forward(): tf.Tensor {
    throw new Error('two inputs');
  }
}

/** Random adapter tensors (seeded): weights N(0, 0.3), scaling and norm weights around 1, as the Python reference does. */
function randomize(peft: PeftModel): void {
  let seed = 11;
  for (const [key, v] of peft.adapterTensorMap('default')) {
    const center = key.endsWith('.scaling') || (key.includes('adapter_norm') && key.endsWith('.weight')) ? 1 : 0;
    const t = tf.tidy(() => tf.add(tf.mul(tf.randomNormal(v.shape, 0, 1, 'float32', seed++), 0.3), center));
    v.assign(t);
    t.dispose();
  }
}

/** Loss and its gradients by file key, for the given variables. */
function lossAndGrads(model: { forward: PeftModel['forward'] }, vars: Map<string, tf.Variable>): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
  const { value, grads } = tf.variableGrads(() => model.forward({ inputIds: ids, attentionMask: mask, labels }).loss!, [...vars.values()]);
  return { loss: value, grads: new Map([...vars].map(([k, v]) => [k, grads[v.name]])) };
}

async function relDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const [d, s] = tf.tidy(() => [tf.max(tf.abs(tf.sub(a, b))), tf.max(tf.abs(b))]);
  const r = (await d.data())[0] / (await s.data())[0];
  tf.dispose([d, s]);
  return r;
}

describe('bottleneck adapters match AdapterHub\'s definitions (restated in the test)', () => {
  for (const family of ['llama', 'gpt2'] as const) {
    for (const [name, fields] of Object.entries(CASES)) {
      it(`${family}_${name}: logits and gradients`, async () => {
        const config = new AdapterConfig(fields);
        const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASES[family]), config);
        randomize(peft);
        const map = peft.adapterTensorMap('default');
        // the reference: a second base model with DefinitionHooks holding copies of the same tensors
        const ref = await AutoModelForCausalLM.fromPretrained(BASES[family]);
        const refVars = new Map<string, tf.Variable>();
        const hooks = new Map<string, Record<string, tf.Variable>>();
        for (const [key, v] of map) {
          const m = /^base_model\.model\.(.*\.(?:attention|output)_adapters)\.(.+)$/.exec(key)!;
          const rv = tf.variable(v.clone(), true);
          refVars.set(key, rv);
          (hooks.get(m[1]) ?? hooks.set(m[1], {}).get(m[1])!)[m[2]] = rv;
        }
        const expectedHooks = (ref.config.numHiddenLayers - config.leaveOut.length) * config.placements().length;
        expect(hooks.size).toBe(expectedHooks);
        for (const [path, w] of hooks) ref.setSubmodule(path, new DefinitionHook(w, config));

        const got = peft.forward({ inputIds: ids, attentionMask: mask }).logits;
        const want = ref.forward({ inputIds: ids, attentionMask: mask }).logits;
        const maskT = tf.tensor2d(mask, undefined, 'int32');
        const l = await keptDiff(got, want, maskT);
        const base = peft.disableAdapter(() => peft.forward({ inputIds: ids, attentionMask: mask }).logits);
        const moved = await keptDiff(base, want, maskT);
        console.log(`${family}_${name}: logits rel diff ${l.rel.toExponential(2)} (the adapter moves them by ${moved.rel.toExponential(2)})`);
        expect(l.rel).toBeLessThan(TOL);
        expect(moved.rel).toBeGreaterThan(100 * TOL); // the adapter matters: the check could fail

        const a = lossAndGrads(peft, map);
        const b = lossAndGrads(ref as PreTrainedModel, refVars);
        expect(Math.abs((await a.loss.data())[0] - (await b.loss.data())[0])).toBeLessThan(1e-5);
        for (const [key, g] of a.grads) {
          const r = await relDiff(g, b.grads.get(key)!);
          expect(r, key).toBeLessThan(TOL);
        }
        tf.dispose([got, want, base, maskT, a.loss, b.loss, ...a.grads.values(), ...b.grads.values(), ...refVars.values()]);
        peft.dispose();
        ref.dispose();
      });
    }
  }
});

const fixtureCases = existsSync(`${FIXTURES}meta.json`) ? Object.keys(JSON.parse(readFileSync(`${FIXTURES}meta.json`, 'utf8')).cases) : [];

describe('bottleneck adapters match the PyTorch reference of AdapterHub (fixtures)', () => {
  it('the fixtures are there (python3 tools/reference/adapterhub_ref.py packages/adapters/fixtures/adapterhub 0 on the device machine)', () => {
    expect(fixtureCases.length, `no meta.json in ${FIXTURES}`).toBeGreaterThanOrEqual(12);
  });
  for (const name of fixtureCases) {
    it(`${name}: adapted and base logits, loss, gradients`, async () => {
      const dir = `${FIXTURES}${name}/`;
      const t = await loadSafetensors(`${dir}tensors.safetensors`);
      const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter`, { isTrainable: true });
      peft.eval();
      const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
      const adapted = peft.forward(inputs).logits;
      const a = await keptDiff(adapted, t.logits_adapted, t.attention_mask);
      const base = peft.disableAdapter(() => peft.forward(inputs).logits);
      const b = await keptDiff(base, t.logits_base, t.attention_mask);
      console.log(`${name}: adapted logits rel diff ${a.rel.toExponential(2)}, base ${b.rel.toExponential(2)}`);
      expect(a.rel).toBeLessThan(TOL);
      expect(b.rel).toBeLessThan(TOL);
      expect((await keptDiff(t.logits_base, t.logits_adapted, t.attention_mask)).rel).toBeGreaterThan(100 * TOL);

      const map = peft.adapterTensorMap('default');
      const gradKeys = Object.keys(t).filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
      expect([...map.keys()].sort()).toEqual(gradKeys.sort());
      const { value, grads } = tf.variableGrads(() => peft.forward({ ...inputs, labels: t.labels }).loss!, [...map.values()]);
      expect(Math.abs((await value.data())[0] - (await t.loss.data())[0])).toBeLessThan(1e-5 * Math.max(1, (await t.loss.data())[0]));
      let worst = 0;
      for (const [key, v] of map) {
        const r = await relDiff(grads[v.name], t[`grad.${key}`]);
        worst = Math.max(worst, r);
        expect(r, key).toBeLessThan(TOL);
      }
      console.log(`${name}: worst gradient rel diff ${worst.toExponential(2)} over ${map.size} tensors`);
      tf.dispose([adapted, base, value, ...Object.values(grads), ...Object.values(t)]);
      peft.dispose();
    });
  }
});
