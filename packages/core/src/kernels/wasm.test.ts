import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { ensureWasmKernels } from './wasm';

describe('wasm kernel fixes', () => {
  it('gather has a gradient and float one-hot is right on wasm, as on cpu', async () => {
    ensureWasmKernels();
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const e = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
      const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.gather(x, tf.tensor1d([1, 1, 3, 0], 'int32')), tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]))))(e);
      const oh = tf.oneHot(tf.tensor1d([2, 0, 5], 'int32'), 4, 1, 0, 'float32');
      const seg = tf.unsortedSegmentSum(tf.tensor2d([[1, 2], [3, 4], [5, 6]]), tf.tensor1d([2, 0, 2], 'int32'), 3);
      return { g: Array.from(await g.data()), oh: Array.from(await oh.data()), seg: Array.from(await seg.data()) };
    };
    const prev = tf.getBackend();
    const wasm = await run('wasm');
    const cpu = await run('cpu');
    await tf.setBackend(prev);
    expect(wasm).toEqual(cpu);
    expect(cpu.g).toEqual([7, 8, 4, 6, 0, 0, 5, 6]);
    expect(cpu.oh).toEqual([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
  });
});
