import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { checkConformance } from './registry';
import { batchMatMulOp, linearOp } from './ops';
import { expectFlatMemory } from '../../../../tools/testing/ops';

// The wasm/cpu fast paths of the linear ops against their references: outputs and every gradient.
describe(`CPU fast paths on ${tf.getBackend()}`, () => {
  it('are registered for wasm and cpu', () => {
    expect(linearOp.fastPathBackends()).toEqual(expect.arrayContaining(['wasm', 'cpu']));
    expect(batchMatMulOp.fastPathBackends()).toEqual(expect.arrayContaining(['wasm', 'cpu']));
  });

  it.each([
    { name: '3-D input with bias', x: [2, 5, 7], out: 6, bias: true },
    { name: '2-D input without bias', x: [9, 4], out: 3, bias: false },
  ])('peftjs.Linear: $name', async ({ x, out, bias }) => {
    const inF = x[x.length - 1];
    const r = await checkConformance(linearOp, () => ({ x: tf.randomNormal(x), weight: tf.randomNormal([out, inF]), bias: bias ? tf.randomNormal([out]) : undefined }), {});
    expect(r.ok, JSON.stringify(r)).toBe(true);
  });

  it.each([
    { a: [2, 3, 4, 5], b: [2, 3, 5, 6] },
    { a: [4, 3, 5], b: [4, 5, 2] },
    { a: [3, 7], b: [7, 2] },
  ])('peftjs.BatchMatMul [$a]·[$b]', async ({ a, b }) => {
    const r = await checkConformance(batchMatMulOp, () => ({ a: tf.randomNormal(a), b: tf.randomNormal(b) }), {});
    expect(r.ok, JSON.stringify(r)).toBe(true);
  });

  it('UnsortedSegmentSum (the gradient of gather: a trainable embedding) runs and matches a sum by hand', () => {
    const table = tf.variable(tf.randomNormal([5, 3]));
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, tf.tensor2d([[1, 3], [1, 0]], [2, 2], 'int32')), tf.range(1, 13).reshape([2, 2, 3]))))(table);
    const w = tf.range(1, 13).reshape([4, 3]).arraySync() as number[][];
    const expected = [w[3], w[0].map((v, j) => v + w[2][j]), [0, 0, 0], w[1], [0, 0, 0]];
    expect(g.arraySync()).toEqual(expected);
    tf.dispose([table, g]);
  });

  it('frees every intermediate (forward and backward)', () => {
    const x = tf.randomNormal([3, 4]);
    const w = tf.variable(tf.randomNormal([5, 4]));
    const bias = tf.variable(tf.randomNormal([5]));
    const step = () => {
      const { value, grads } = tf.variableGrads(() => {
        const y = linearOp({ x, weight: w, bias }, {});
        return tf.sum(batchMatMulOp({ a: y.reshape([1, 3, 5]), b: tf.ones([1, 5, 2]) }, {})) as tf.Scalar;
      }, [w, bias]);
      tf.dispose([value, ...Object.values(grads)]);
    };
    expectFlatMemory(step);
    // the fast paths' transposes and per-entry copies are backend data the engine never sees
    const dataIds = () => (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
    const before = dataIds();
    for (let i = 0; i < 3; i++) step();
    expect(dataIds()).toBe(before);
    tf.dispose([x, w, bias]);
  });
});
