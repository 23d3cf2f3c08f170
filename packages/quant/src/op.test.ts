// The dequantising matmul's tfjs reference (the CPU backends' path) against the host dequantisation
// (bit for bit) and against a plain matMul of that weight; Linear4bit's forward, frozen weight, no leaks.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { linearOp } from '@peftjs/core';
import { dequantizeState, Linear4bit, quantizeState, dequant4bitMatMulOp, type QuantType } from './index';

let seed = 3;
const randArr = (n: number, scale = 0.05) => Float32Array.from(tf.tidy(() => tf.randomNormal([n], 0, scale, 'float32', seed++)).dataSync());

describe('peftjs.Dequant4bitMatMul reference', () => {
  const shapes: [number, number][] = [[7, 5], [33, 65], [40, 129], [17, 300]];
  for (const [outF, inF] of shapes) {
    for (const [qt, dq] of [['nf4', true], ['fp4', false], ['nf4', false], ['fp4', true]] as [QuantType, boolean][]) {
      it(`W [${outF}, ${inF}] ${qt}${dq ? ' + double quant' : ''}: dequantised weight bit for bit, forward and dx`, async () => {
        const w = randArr(outF * inF);
        const state = quantizeState(w, qt, dq);
        const host = dequantizeState(state, outF * inF);
        const layer = Linear4bit.fromState(state, outF, inF);
        const before = tf.memory().numTensors;
        const dev = layer.dequantize();
        expect(Array.from(await dev.data())).toEqual(Array.from(host));
        dev.dispose();
        const x = tf.randomNormal([2, 3, inF], 0, 1, 'float32', seed++);
        const W = tf.tensor2d(host, [outF, inF]);
        const y = layer.forward(x);
        // the same product an fp32 Linear of that weight runs: equal exactly
        const want = linearOp({ x, weight: W }, {});
        expect(y.shape).toEqual([2, 3, outF]);
        const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(y, want))));
        expect((await diff.data())[0]).toBe(0);
        // the input gradient is dy·W; the weight is frozen
        const dy = tf.randomNormal([2, 3, outF], 0, 1, 'float32', seed++);
        const [dx] = tf.grads((a: tf.Tensor) => tf.sum(tf.mul(layer.forward(a), dy)))([x]);
        const dxWant = tf.tidy(() => tf.matMul(dy.reshape([-1, outF]), W).reshape([2, 3, inF]));
        const d2 = tf.tidy(() => tf.max(tf.abs(tf.sub(dx, dxWant))));
        expect((await d2.data())[0]).toBeLessThan(1e-5);
        tf.dispose([x, W, y, want, diff, dy, dx, dxWant, d2]);
        expect(tf.memory().numTensors).toBe(before);
        layer.dispose();
      });
    }
  }

  it('refuses an input of the wrong width, naming the layer', () => {
    const layer = Linear4bit.fromFloat(randArr(64), 8, 8, { quantType: 'nf4', doubleQuant: true });
    const x = tf.zeros([2, 9]);
    expect(() => layer.forward(x)).toThrow(/Linear4bit\(8, 8\): input \[2,9\]/);
    expect(() => layer.weight).toThrow(/4-bit codes/);
    x.dispose();
    layer.dispose();
  });

  it('op is in the registry with a webgpu fast path', () => {
    expect(dequant4bitMatMulOp.fastPathBackends()).toContain('webgpu');
  });
});
