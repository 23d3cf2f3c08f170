// The LoRA linear op (./op.ts) on the CPU backends (wasm, cpu): its reference against the formula, its
// fast path against the reference (outputs and every gradient), registration through core's registry,
// parking with core's layout fast paths, and no leaked tensors.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MATMUL_LAYOUT, checkConformance, linearOp, listOps, setBackendFastPaths } from '@peftjs/core';
import { loraLinearOp } from './index';
import { expectFlatMemory } from '../../../tools/testing/ops';

describe(`peftjs.LoraLinear on ${tf.getBackend()}`, () => {
  it('is registered in core’s kernel registry by importing @peftjs/lora, with wasm and cpu fast paths', () => {
    expect(listOps().find((o) => o.name === 'peftjs.LoraLinear')?.fastPaths).toEqual(expect.arrayContaining(['wasm', 'cpu', 'webgpu']));
    expect(loraLinearOp.fastPathBackends()).toEqual(expect.arrayContaining(['wasm', 'cpu']));
  });

  it('reference: base + s·(x·Aᵀ)·Bᵀ', async () => {
    const x = tf.randomNormal([2, 3, 5]);
    const A = tf.randomNormal([2, 5]);
    const B = tf.randomNormal([4, 2]);
    const base = tf.randomNormal([2, 3, 4]);
    const y = loraLinearOp.reference({ base, x, loraA: A, loraB: B }, { scaling: 0.5 });
    const expected = tf.add(base, tf.mul(tf.matMul(tf.matMul(x.reshape([6, 5]), A.transpose()), B.transpose()).reshape([2, 3, 4]), 0.5));
    const d = tf.max(tf.abs(tf.sub(y, expected)));
    expect((await d.data())[0]).toBeLessThan(1e-5);
    tf.dispose([x, A, B, base, y, expected, d]);
  });

  it.each([
    { scaling: 1, rows: [2, 3], inF: 5, out: 6, r: 4 },
    { scaling: 0.5, rows: [2, 3], inF: 5, out: 6, r: 4 },
    { scaling: 2, rows: [37], inF: 70, out: 9, r: 8 },
    { scaling: 0.25, rows: [1, 3], inF: 13, out: 5, r: 1 },
  ])('fast path conforms with the reference: scaling $scaling, r = $r, x [$rows, $inF]', async ({ scaling, rows, inF, out, r }) => {
    const rep = await checkConformance(
      loraLinearOp,
      () => ({ base: tf.randomNormal([...rows, out]), x: tf.randomNormal([...rows, inF]), loraA: tf.randomNormal([r, inF]), loraB: tf.randomNormal([out, r]) }),
      { scaling },
    );
    expect(loraLinearOp.fastPathBackends()).toContain(tf.getBackend());
    expect(rep.ok, JSON.stringify(rep)).toBe(true);
  });

  it('parks with core’s matmul layout fast paths (MATMUL_LAYOUT) and comes back with them', () => {
    const backend = tf.getBackend();
    setBackendFastPaths(backend, false, MATMUL_LAYOUT);
    try {
      expect(loraLinearOp.fastPathBackends()).not.toContain(backend);
      expect(linearOp.fastPathBackends()).not.toContain(backend);
    } finally {
      setBackendFastPaths(backend, true, MATMUL_LAYOUT);
    }
    expect(loraLinearOp.fastPathBackends()).toContain(backend);
  });

  it('frees every intermediate (forward and backward): engine tensors and the kernel’s own backend data', () => {
    const x = tf.randomNormal([3, 4]);
    const w = tf.variable(tf.randomNormal([5, 4]));
    const a = tf.variable(tf.randomNormal([2, 4]));
    const b = tf.variable(tf.randomNormal([5, 2]));
    const step = () => {
      const { value, grads } = tf.variableGrads(() => tf.sum(loraLinearOp({ base: linearOp({ x, weight: w }, {}), x, loraA: a, loraB: b }, { scaling: 2 })) as tf.Scalar, [w, a, b]);
      tf.dispose([value, ...Object.values(grads)]);
    };
    expectFlatMemory(step);
    // the fast path's transposes and products are backend data the engine never sees
    const dataIds = () => (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
    const before = dataIds();
    for (let i = 0; i < 3; i++) step();
    expect(dataIds()).toBe(before);
    tf.dispose([x, w, a, b]);
  });
});
