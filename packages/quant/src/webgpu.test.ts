// peftjs.Dequant4bitMatMul's WGSL fast path against its tfjs reference on webgpu (lavapipe here;
// skipped without an adapter): forward and dx, both quant types, with and without double quantisation,
// odd shapes (not multiples of the 16×16 tile, of 64 or of 256), and the layer's outputs.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { checkConformance, initBackend } from '@peftjs/core';
import { Linear, getPeftModel, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { BitsAndBytesConfig, Linear4bit, dequant4bitMatMulOp, dequantizeState, quantizeState, type Dequant4bitInputs, type QuantType } from './index';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

let seed = 11;
const host = (n: number) => {
  // a deterministic host array (no read back): a simple LCG, roughly N(0, 0.05)-sized
  const a = new Float32Array(n);
  let s = seed++ * 7919;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    a[i] = ((s / 2147483648) * 2 - 1) * 0.08;
  }
  return a;
};

describe.skipIf(!onGpu)('peftjs.Dequant4bitMatMul on webgpu', () => {
  const cases: [number, number, number, QuantType, boolean][] = [
    [1, 7, 5, 'nf4', true],
    [3, 33, 65, 'fp4', false],
    [19, 40, 129, 'nf4', false],
    [37, 130, 300, 'fp4', true],
    [5, 256, 688, 'nf4', true],
  ];
  for (const [m, outF, inF, qt, dq] of cases) {
    for (const transW of [false, true]) {
      it(`${transW ? 'dx = x·W' : 'y = x·Wᵀ'}: x [${m}, ${transW ? outF : inF}], W [${outF}, ${inF}] ${qt}${dq ? ' + dq' : ''}`, async () => {
        expect(dequant4bitMatMulOp.fastPathBackends()).toContain('webgpu');
        const state = quantizeState(host(outF * inF), qt, dq);
        const layer = Linear4bit.fromState(state, outF, inF);
        const w = (layer as any).weightInputs();
        const attrs = { outFeatures: outF, inFeatures: inF, quantType: qt, offset: (layer as any).offset, transW };
        const r = await checkConformance(
          dequant4bitMatMulOp,
          () => ({ x: tf.randomNormal([m, transW ? outF : inF], 0, 1, 'float32', seed++), ...Object.fromEntries(Object.entries(w).map(([k, v]) => [k, tf.clone(v as tf.Tensor)])) }) as Dequant4bitInputs,
          attrs,
        );
        expect(r.backend).toBe('webgpu');
        expect(r.forwardMaxAbsDiff).toBeLessThan(1e-5);
        expect(r.gradMaxAbsDiff.x).toBeLessThan(1e-5);
        expect(r.ok).toBe(true);
        layer.dispose();
      });
    }
  }

  it('the layer on webgpu: forward equals x·Wᵀ of the host-dequantised weight, dequantize() is bit exact, no leaks', async () => {
    const [outF, inF] = [48, 200];
    const state = quantizeState(host(outF * inF), 'nf4', true);
    const layer = Linear4bit.fromState(state, outF, inF);
    const before = tf.memory().numTensors;
    const W = dequantizeState(state, outF * inF);
    const dev = layer.dequantize();
    expect(Array.from(await dev.data())).toEqual(Array.from(W));
    const x = tf.randomNormal([2, 9, inF], 0, 1, 'float32', 5);
    const y = layer.forward(x);
    const want = tf.tidy(() => tf.matMul(x.reshape([-1, inF]), tf.tensor2d(W, [outF, inF]), false, true).reshape([2, 9, outF]));
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(y, want))));
    expect((await d.data())[0]).toBeLessThan(1e-5);
    tf.dispose([dev, x, y, want, d]);
    expect(tf.memory().numTensors).toBe(before);
    layer.dispose();
  });

  it('the bundled model in 4 bits on webgpu: logits match the reference-dequantised fp32 model, a QLoRA step lowers the loss, no leaks', async () => {
    const dir = tinyLlamaDir();
    const q = await AutoModelForCausalLM.fromPretrained(dir, { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) });
    const deq = await AutoModelForCausalLM.fromPretrained(dir);
    for (const [name, m] of q.namedModules()) {
      if (!(m instanceof Linear4bit)) continue;
      const lin = deq.getSubmodule<Linear>(name);
      const w = Float32Array.from(await lin.weight.data());
      const t = tf.tensor2d(dequantizeState(quantizeState(w, 'nf4', true), w.length), lin.weight.shape as [number, number]);
      lin.weight.assign(t);
      t.dispose();
    }
    const ids = [[5, 17, 300, 9, 41, 77, 1000, 2, 64, 3]];
    const a = q.forward({ inputIds: ids }).logits;
    const b = deq.forward({ inputIds: ids }).logits;
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
    const scale = tf.tidy(() => tf.max(tf.abs(b)));
    const [diff, s] = [(await d.data())[0], (await scale.data())[0]];
    console.log(`webgpu: |4-bit − reference-dequantised| ${diff.toExponential(2)} of ${s.toFixed(2)}`);
    expect(diff / s).toBeLessThan(1e-5);
    tf.dispose([a, b, d, scale]);
    deq.dispose();
    const peft = getPeftModel(q, new LoraConfig({ r: 4, targetModules: 'all-linear', taskType: TaskType.CAUSAL_LM }));
    const opt = tf.train.adam(1e-2);
    const losses: number[] = [];
    let n0 = 0;
    for (let i = 0; i < 3; i++) {
      if (i === 1) n0 = tf.memory().numTensors;
      const c = opt.minimize(() => {
        const o = peft.forward({ inputIds: ids, labels: ids });
        o.logits.dispose();
        return o.loss as tf.Scalar;
      }, true, peft.trainableParameters())!;
      losses.push((await c.data())[0]);
      c.dispose();
    }
    console.log('webgpu QLoRA losses', losses.map((l) => l.toFixed(4)).join(' '));
    expect(losses[2]).toBeLessThan(losses[0]);
    expect(tf.memory().numTensors).toBe(n0);
    opt.dispose();
    peft.dispose();
  }, 480_000); // lavapipe compiles every pipeline of the model's forward and backward on first use
});
