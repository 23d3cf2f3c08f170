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

describe('wasm kernels that share data or copy whole rows', () => {
  it('clone and same-dtype cast share the buffer safely: disposing either side keeps the other', async () => {
    ensureWasmKernels();
    const prev = tf.getBackend();
    await tf.setBackend('wasm');
    try {
      const before = tf.memory().numTensors;
      const x = tf.tensor2d([[1, 2, 3], [4, 5, 6]]);
      const c = tf.clone(x);
      const f = tf.cast(x, 'float32');
      const id = (t: tf.Tensor) => (t as unknown as { dataId: object }).dataId;
      expect(id(c)).toBe(id(x)); // one buffer for three tensors
      expect(id(f)).toBe(id(x));
      x.dispose();
      expect(Array.from(await c.data())).toEqual([1, 2, 3, 4, 5, 6]);
      c.dispose();
      expect(Array.from(await f.data())).toEqual([1, 2, 3, 4, 5, 6]);
      const i = tf.cast(f, 'int32');
      expect(i.dtype).toBe('int32');
      expect(Array.from(await i.data())).toEqual([1, 2, 3, 4, 5, 6]);
      tf.dispose([f, i]);
      expect(tf.memory().numTensors).toBe(before);
      // a variable assigned from a clone, then the clone disposed
      const v = tf.variable(tf.zeros([3]));
      const src = tf.tensor1d([7, 8, 9]);
      v.assign(tf.clone(src));
      src.dispose();
      expect(Array.from(await v.data())).toEqual([7, 8, 9]);
      v.dispose();
    } finally {
      await tf.setBackend(prev);
    }
  });

  it('gather along axis 0 equals the cpu backend (rows, scalars, int32, nested indices, negative axis) and rejects out-of-range ids', async () => {
    ensureWasmKernels();
    const prev = tf.getBackend();
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const table = tf.tensor3d(Array.from({ length: 5 * 3 * 2 }, (_, i) => i * 0.5 - 3), [5, 3, 2]);
      const flat = tf.tensor1d([10, 20, 30, 40], 'int32');
      const ids = tf.tensor2d([[4, 0], [2, 2]], [2, 2], 'int32');
      const out = [
        tf.gather(table, ids),
        tf.gather(table, tf.tensor1d([1, 3], 'int32'), -3),
        tf.gather(flat, tf.tensor1d([3, 0, 3], 'int32')),
        tf.gather(table, tf.tensor1d([2, 0], 'int32'), 1), // another axis: wasm's own kernel
      ];
      const r = await Promise.all(out.map(async (t) => ({ shape: t.shape, v: Array.from(await t.data()) })));
      let err = '';
      try {
        tf.gather(table, tf.tensor1d([5], 'int32')).dataSync();
      } catch (e) {
        err = (e as Error).message;
      }
      return { r, err };
    };
    try {
      const wasm = await run('wasm');
      const cpu = await run('cpu');
      expect(wasm.r).toEqual(cpu.r);
      expect(wasm.r[2].v).toEqual([40, 10, 40]);
      expect(wasm.err).toContain('GatherV2: the index value 5 is not in [0, 4]');
    } finally {
      await tf.setBackend(prev);
    }
  });
});
