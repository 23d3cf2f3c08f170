// The webgpu fast paths of peftjs.Linear / BatchMatMul / MatMul (WGSL matmul) against their
// tfjs references with checkConformance: forward and every gradient, odd shapes, no leaked tensors.
// Skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../backend';
import { checkConformance, setBackendFastPaths } from '../registry';
import { batchMatMulOp, linearOp } from '../ops';
import { fusedMatMul, matmulOp } from './matmul_op';
import { WGSL_MATMUL } from './linear';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

async function expectFlat(step: () => void | Promise<void>, repeats = 3): Promise<void> {
  await step();
  const { numTensors, numBytes } = tf.memory();
  for (let i = 0; i < repeats; i++) await step();
  expect(tf.memory().numTensors).toBe(numTensors);
  expect(tf.memory().numBytes).toBe(numBytes);
}

describe.skipIf(!onGpu)('WGSL matmul fast paths (webgpu)', () => {
  it('are registered for webgpu', () => {
    for (const op of [linearOp, batchMatMulOp, matmulOp]) expect(op.fastPathBackends()).toContain('webgpu');
  });

  it.each([
    { name: '3-D input with bias', x: [2, 5, 7], out: 6, bias: true },
    { name: '2-D input without bias', x: [9, 4], out: 3, bias: false },
    { name: 'one row, K = 1', x: [1, 1], out: 5, bias: true },
    { name: 'N = 1', x: [6, 8], out: 1, bias: false },
    { name: 'more rows than a tile', x: [70, 12], out: 33, bias: true },
  ])('peftjs.Linear: $name', async ({ x, out, bias }) => {
    const inF = x[x.length - 1];
    const r = await checkConformance(linearOp, () => ({ x: tf.randomNormal(x), weight: tf.randomNormal([out, inF]), bias: bias ? tf.randomNormal([out]) : undefined }), {});
    expect(r.ok, JSON.stringify(r)).toBe(true);
  });

  it.each([
    { a: [2, 3, 4, 5], b: [2, 3, 5, 6] },
    { a: [3, 7], b: [7, 2] },
  ])('peftjs.BatchMatMul [$a]·[$b]', async ({ a, b }) => {
    const r = await checkConformance(batchMatMulOp, () => ({ a: tf.randomNormal(a), b: tf.randomNormal(b) }), {});
    expect(r.ok, JSON.stringify(r)).toBe(true);
  });

  it.each([
    { name: 'ᵀ· with bias and c', a: [5, 6], b: [5, 7], transA: true, transB: false, bias: [7], c: [6, 7] },
    { name: '·ᵀ batched, c of one entry', a: [2, 6, 5], b: [2, 7, 5], transA: false, transB: true, c: [6, 7] },
    { name: 'ᵀ·ᵀ batched', a: [3, 5, 6], b: [3, 7, 5], transA: true, transB: true },
  ])('peftjs.MatMul $name', async ({ a, b, transA, transB, bias, c }) => {
    const r = await checkConformance(
      matmulOp,
      () => ({ a: tf.randomNormal(a), b: tf.randomNormal(b), bias: bias ? tf.randomNormal(bias) : undefined, c: c ? tf.randomNormal(c) : undefined }),
      { transA, transB, alpha: 0.75, beta: -1.5 },
    );
    expect(r.ok, JSON.stringify(r)).toBe(true);
  });

  // tfjs 4.22's own matMul gradient does not sum over a broadcast batch (checkConformance's reference
  // fails there): compare with the gradient through explicitly broadcast operands instead
  it.each([
    { name: 'b of batch 1', a: [4, 3, 5], b: [1, 5, 2], transA: false, transB: false },
    { name: 'a of batch 1', a: [1, 7, 3], b: [3, 3, 2], transA: false, transB: false },
    { name: 'b rank 2, ᵀ·ᵀ', a: [3, 5, 6], b: [7, 5], transA: true, transB: true },
    { name: 'b rank 2, b transposed', a: [2, 4, 6], b: [5, 6], transA: false, transB: true },
    { name: 'a rank 2, a transposed', a: [6, 4], b: [3, 6, 5], transA: true, transB: false },
  ])('batch broadcasting, gradients summed: $name', async ({ a: sa, b: sb, transA, transB }) => {
    const a = tf.randomNormal(sa);
    const b = tf.randomNormal(sb);
    const lead = sa.length >= sb.length && tf.util.sizeFromShape(sa.slice(0, -2)) > 1 ? sa.slice(0, -2) : sb.slice(0, -2);
    const [ga, gb, want] = tf.tidy(() => {
      const y = fusedMatMul(a, b, { transA, transB, alpha: 1.5 });
      const w = tf.randomNormal(y.shape, 0, 1, 'float32', 5);
      const f = (fa: tf.Tensor, fb: tf.Tensor) => tf.sum(tf.mul(fusedMatMul(fa, fb, { transA, transB, alpha: 1.5 }), w));
      const g = tf.grads(f)([a, b]);
      const r = (ra: tf.Tensor, rb: tf.Tensor) =>
        tf.sum(tf.mul(tf.mul(tf.matMul(tf.broadcastTo(ra, [...lead, ...sa.slice(-2)]), tf.broadcastTo(rb, [...lead, ...sb.slice(-2)]), transA, transB), 1.5), w));
      const gr = tf.grads(r)([a, b]);
      return [g[0], g[1], gr];
    }) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor[]];
    for (const [got, exp] of [[ga, want[0]], [gb, want[1]]]) {
      expect(got.shape).toEqual(exp.shape);
      const d = (await tf.max(tf.abs(tf.sub(got, exp))).data())[0];
      const s = (await tf.max(tf.abs(exp)).data())[0];
      expect(d / s).toBeLessThan(1e-5);
    }
    tf.dispose([a, b, ga, gb, ...want]);
  });

  it('frees every intermediate (forward and backward), frozen weight included', async () => {
    const x = tf.randomNormal([3, 4]);
    const w = tf.randomNormal([5, 4]); // frozen: no gradient asked
    const bias = tf.variable(tf.randomNormal([5]));
    const c = tf.variable(tf.randomNormal([1, 5, 2]));
    await expectFlat(async () => {
      const { value, grads } = tf.variableGrads(() => {
        const y = linearOp({ x, weight: w, bias }, {});
        return tf.sum(batchMatMulOp({ a: y.reshape([1, 3, 5]), b: c }, {})) as tf.Scalar;
      }, [bias, c]);
      await value.data();
      tf.dispose([value, ...Object.values(grads)]);
    });
    tf.dispose([x, w, bias, c]);
  });

  it('can be parked by tag (the ops then run their references)', () => {
    setBackendFastPaths('webgpu', false, WGSL_MATMUL);
    try {
      expect(linearOp.fastPathBackends()).not.toContain('webgpu');
    } finally {
      setBackendFastPaths('webgpu', true, WGSL_MATMUL);
    }
    expect(linearOp.fastPathBackends()).toContain('webgpu');
  });
});
