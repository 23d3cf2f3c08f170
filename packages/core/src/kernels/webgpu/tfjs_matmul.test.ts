// tfjs's own BatchMatMul / _FusedMatMul on webgpu replaced by the WGSL matmul: the same results as
// tfjs's kernels for every transpose combination, batch broadcasting, fused bias, the gradients of
// tf.matMul (which run BatchMatMul again), and the fallbacks; restored afterwards. Skipped without WebGPU.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../backend';
import { useWgslForTfjsMatMul, wgslForTfjsMatMul } from './tfjs_matmul';
import '../ops';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

async function both(f: () => tf.Tensor[]): Promise<number> {
  useWgslForTfjsMatMul(false);
  const want = f();
  expect(useWgslForTfjsMatMul(true)).toBe(true);
  const before = tf.memory().numTensors;
  const got = f();
  expect(tf.memory().numTensors).toBe(before + got.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    expect(got[i].shape).toEqual(want[i].shape);
    const [g, w] = await Promise.all([got[i].data(), want[i].data()]);
    let scale = 1e-6;
    let d = 0;
    for (let j = 0; j < w.length; j++) {
      scale = Math.max(scale, Math.abs(w[j]));
      d = Math.max(d, Math.abs(g[j] - w[j]));
    }
    worst = Math.max(worst, d / scale);
  }
  tf.dispose([...want, ...got]);
  return worst;
}

describe.skipIf(!onGpu)('tfjs matMul on the WGSL matmul (webgpu)', () => {
  afterAll(() => useWgslForTfjsMatMul(false));

  it.each([
    { a: [7, 5], b: [5, 6], tA: false, tB: false },
    { a: [5, 7], b: [5, 6], tA: true, tB: false },
    { a: [7, 5], b: [6, 5], tA: false, tB: true },
    { a: [5, 7], b: [6, 5], tA: true, tB: true },
    { a: [3, 9, 4], b: [3, 3, 4], tA: false, tB: true },
  ])('tf.matMul [$a]·[$b] (transposes $tA $tB) and its gradients', async ({ a, b, tA, tB }) => {
    const x = tf.randomNormal(a, 0, 1, 'float32', 1);
    const y = tf.randomNormal(b, 0, 1, 'float32', 2);
    const d = await both(() => {
      const out = tf.matMul(x, y, tA, tB);
      const w = tf.randomNormal(out.shape, 0, 1, 'float32', 3);
      const g = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(tf.matMul(p, q, tA, tB), w)))([x, y]);
      w.dispose();
      return [out, ...g];
    });
    expect(d).toBeLessThan(1e-5);
    tf.dispose([x, y]);
  });

  // forward only: tfjs 4.22's matMul gradient does not reduce a broadcast batch (on any kernel)
  it.each([
    { a: [2, 3, 9, 4], b: [1, 1, 4, 3], tA: false, tB: false },
    { a: [3, 9, 4], b: [4, 3], tA: false, tB: false },
    { a: [4, 9], b: [2, 3, 4], tA: true, tB: true },
  ])('tf.matMul [$a]·[$b] (transposes $tA $tB) with batch broadcasting', async ({ a, b, tA, tB }) => {
    const x = tf.randomNormal(a, 0, 1, 'float32', 1);
    const y = tf.randomNormal(b, 0, 1, 'float32', 2);
    expect(await both(() => [tf.matMul(x, y, tA, tB)])).toBeLessThan(1e-5);
    tf.dispose([x, y]);
  });

  it('tf.fused.matMul with a bias, and with relu (tfjs fallback)', async () => {
    const x = tf.randomNormal([6, 5], 0, 1, 'float32', 1);
    const y = tf.randomNormal([7, 5], 0, 1, 'float32', 2);
    const bias = tf.randomNormal([7], 0, 1, 'float32', 3);
    const d = await both(() => [
      tf.fused.matMul({ a: x, b: y, transposeB: true, bias }),
      tf.fused.matMul({ a: x, b: y, transposeB: true, bias, activation: 'relu' }),
    ]);
    expect(d).toBeLessThan(1e-5);
    tf.dispose([x, y, bias]);
  });

  it('switches back to tfjs kernels', () => {
    useWgslForTfjsMatMul(false);
    expect(wgslForTfjsMatMul()).toBe(false);
  });
});
