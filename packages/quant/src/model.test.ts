// The bundled model loaded in 4 bits: every Linear but the (tied) head is a Linear4bit; logits equal
// the model whose weights are the reference dequantisation (1e-5) and are within the quantisation
// error of fp32's; the base weights' bits per parameter; QLoRA training lowers the loss; no leaks.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { Linear, getPeftModel, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { BitsAndBytesConfig, Linear4bit, dequantizeState, quantizeState } from './index';

const dir = tinyLlamaDir();
const tok = await AutoTokenizer.fromPretrained(dir);
const text = 'It was the best of times, it was the worst of times; the whale rose from the sea and the ship turned to meet it.';
const ids = [tok.encode(text).slice(0, 24)];

async function maxAbs(a: tf.Tensor, b: tf.Tensor) {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

for (const [qt, dq] of [['nf4', true], ['fp4', false]] as const) {
  describe(`tiny-llama in 4 bits (${qt}${dq ? ', double quant' : ''})`, () => {
    it('linear layers are 4-bit; logits equal the reference-dequantised model to 1e-5 and stay within the quantisation error of fp32', async () => {
      const cfg = new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: qt, bnb4bitUseDoubleQuant: dq });
      const q = await AutoModelForCausalLM.fromPretrained(dir, { quantizationConfig: cfg });
      const fp = await AutoModelForCausalLM.fromPretrained(dir);
      const deq = await AutoModelForCausalLM.fromPretrained(dir);
      const q4 = [...q.namedModules()].filter(([, m]) => m instanceof Linear4bit);
      expect(q4.length).toBe(4 * 7);
      // the reference dequantisation (host code, bit for bit with the NumPy reference) as fp32 weights
      let params = 0;
      let bytes = 0;
      for (const [name, m] of q4) {
        const l = m as Linear4bit;
        params += l.inFeatures * l.outFeatures;
        bytes += l.storageBytes();
        const lin = deq.getSubmodule<Linear>(name);
        const w = Float32Array.from(await lin.weight.data());
        lin.weight.assign(tf.tensor2d(dequantizeState(quantizeState(w, qt, dq), w.length), lin.weight.shape as [number, number]));
      }
      const bits = (8 * bytes) / params;
      console.log(`${qt}${dq ? '+dq' : ''}: ${params} base linear parameters in ${bytes} bytes = ${bits.toFixed(3)} bits/parameter`);
      expect(bits).toBeCloseTo(dq ? 4 + 8 / 64 + 32 / (64 * 256) : 4 + 32 / 64, 2);

      const yq = q.forward({ inputIds: ids }).logits;
      const yd = deq.forward({ inputIds: ids }).logits;
      const yf = fp.forward({ inputIds: ids }).logits;
      const toRef = await maxAbs(yq, yd);
      const toFp = await maxAbs(yq, yf);
      const scale = (await tf.max(tf.abs(yf)).data())[0];
      console.log(`${qt}: |4-bit − reference-dequantised| ${toRef.toExponential(2)}, |4-bit − fp32| ${toFp.toFixed(4)} of logits up to ${scale.toFixed(2)}`);
      expect(toRef).toBeLessThan(1e-5);
      expect(toFp).toBeGreaterThan(1e-3); // quantisation did change the weights
      expect(toFp / scale).toBeLessThan(0.15);
      // the loss on the text barely moves (4-bit keeps the model)
      const lq = q.forward({ inputIds: ids, labels: ids }).loss!;
      const lf = fp.forward({ inputIds: ids, labels: ids }).loss!;
      const [a, b] = [(await lq.data())[0], (await lf.data())[0]];
      console.log(`${qt}: loss 4-bit ${a.toFixed(4)} vs fp32 ${b.toFixed(4)}`);
      expect(Math.abs(a - b) / b).toBeLessThan(0.05);
      tf.dispose([yq, yd, yf, lq, lf]);
      for (const m of [q, fp, deq]) m.dispose();
    });
  });
}

describe('QLoRA training', () => {
  it('LoRA on the 4-bit base trains (the loss falls), only the adapter has gradients, no tensors leak', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(dir, { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) });
    const peft = getPeftModel(base, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: 'all-linear', taskType: TaskType.CAUSAL_LM }));
    const trainable = peft.trainableParameters();
    expect(trainable.length).toBe(2 * 28);
    expect(trainable.every((v) => v.name.length > 0)).toBe(true);
    const opt = tf.train.adam(5e-3);
    const losses: number[] = [];
    let n0 = 0;
    for (let step = 0; step < 12; step++) {
      if (step === 2) n0 = tf.memory().numTensors;
      const cost = opt.minimize(() => {
        const o = peft.forward({ inputIds: ids, labels: ids });
        o.logits.dispose();
        return o.loss as tf.Scalar;
      }, true, trainable)!;
      losses.push((await cost.data())[0]);
      cost.dispose();
    }
    console.log('QLoRA losses', losses.map((l) => l.toFixed(4)).join(' '));
    expect(losses[11]).toBeLessThan(losses[0] * 0.8);
    expect(tf.memory().numTensors).toBe(n0);
    opt.dispose();
    peft.dispose();
  });
});
