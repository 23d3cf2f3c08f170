// The webgpu fast path of the LoRA linear op (./op.ts, WGSL programs in ./wgsl.ts) against its tfjs
// reference with checkConformance: forward and every gradient, the one-dispatch and the two-product
// forward, odd shapes, no leaked tensors. Runs on lavapipe in CI; skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { WGSL_MATMUL, batchMatMulOp, checkConformance, initBackend, linearOp, setBackendFastPaths } from '@peftjs/core';
import { loraLinearOp, setFusedLoraForward } from './index';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

describe.skipIf(!onGpu)('peftjs.LoraLinear on webgpu', () => {
  it('is registered for webgpu', () => {
    expect(loraLinearOp.fastPathBackends()).toContain('webgpu');
  });

  for (const fused of [true, false]) {
    it.each([
      { scaling: 1, rows: [2, 3], inF: 5, out: 6, r: 4 },
      { scaling: 0.5, rows: [37], inF: 70, out: 9, r: 8 },
      { scaling: 2, rows: [4], inF: 3, out: 2, r: 1 },
      { scaling: 0.25, rows: [1, 3], inF: 130, out: 5, r: 48 },
      { scaling: 1.5, rows: [3, 50], inF: 100, out: 130, r: 16 },
    ])(`${fused ? 'one dispatch' : 'two products'}: scaling $scaling, r = $r`, async ({ scaling, rows, inF, out, r }) => {
      setFusedLoraForward(fused);
      try {
        const rep = await checkConformance(
          loraLinearOp,
          () => ({ base: tf.randomNormal([...rows, out]), x: tf.randomNormal([...rows, inF]), loraA: tf.randomNormal([r, inF]), loraB: tf.randomNormal([out, r]) }),
          { scaling },
        );
        expect(rep.ok, JSON.stringify(rep)).toBe(true);
      } finally {
        setFusedLoraForward(true);
      }
    });
  }

  it('frees every intermediate (forward and backward), frozen base weight included', async () => {
    const x = tf.randomNormal([3, 4]);
    const w = tf.randomNormal([5, 4]); // frozen: no gradient asked
    const a = tf.variable(tf.randomNormal([2, 4]));
    const b = tf.variable(tf.randomNormal([5, 2]));
    const step = async () => {
      const { value, grads } = tf.variableGrads(() => {
        const y = loraLinearOp({ base: linearOp({ x, weight: w }, {}), x, loraA: a, loraB: b }, { scaling: 2 });
        return tf.sum(batchMatMulOp({ a: y.reshape([1, 3, 5]), b: tf.ones([1, 5, 2]) }, {})) as tf.Scalar;
      }, [a, b]);
      await value.data();
      tf.dispose([value, ...Object.values(grads)]);
    };
    await step();
    const { numTensors, numBytes } = tf.memory();
    for (let i = 0; i < 3; i++) await step();
    expect(tf.memory().numTensors).toBe(numTensors);
    expect(tf.memory().numBytes).toBe(numBytes);
    tf.dispose([x, w, a, b]);
  });

  it('parks with core’s WGSL matmul fast paths (WGSL_MATMUL)', () => {
    setBackendFastPaths('webgpu', false, WGSL_MATMUL);
    try {
      expect(loraLinearOp.fastPathBackends()).not.toContain('webgpu');
    } finally {
      setBackendFastPaths('webgpu', true, WGSL_MATMUL);
    }
    expect(loraLinearOp.fastPathBackends()).toContain('webgpu');
  });
});
