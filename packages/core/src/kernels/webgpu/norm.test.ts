// peftjs.RmsNorm: the WGSL fast path against its tfjs reference on webgpu (lavapipe in CI; skipped
// without an adapter), and RMSNorm on the CPU backends running exactly the former composition.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../backend';
import { checkConformance } from '../registry';
import { RMSNorm } from '../../nn/layers';
import { rmsNormOp } from './norm';
import { webgpuBackend } from './runner';

const wantGpu = process.env.PEFTJS_TEST_BACKEND !== 'cpu';
const report = wantGpu ? await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e) : undefined;
const onGpu = report !== undefined && !(report instanceof Error) && tf.getBackend() === 'webgpu';

let seed = 1;
const rand = (shape: number[], scale = 1) => tf.mul(tf.randomNormal(shape, 0, 1, 'float32', seed++), scale);

describe.skipIf(!onGpu)('peftjs.RmsNorm on webgpu', () => {
  // row lengths below, above and not a multiple of the workgroup (128) or of 4; one row; a 3-D input;
  // more rows than dweight's block (16) and not a multiple of it
  const shapes: number[][] = [[1, 7], [3, 37], [2, 5, 129], [37, 576], [1, 896], [19, 300]];
  for (const shape of shapes) {
    it(`forward, dx and dweight match the reference for x [${shape}]`, async () => {
      expect(rmsNormOp.fastPathBackends()).toContain('webgpu');
      const d = shape[shape.length - 1];
      const r = await checkConformance(rmsNormOp, () => ({ x: rand(shape, 3), weight: tf.add(rand([d], 0.5), 1) }), { eps: 1e-6 });
      expect(r.backend).toBe('webgpu');
      expect(r.forwardMaxAbsDiff).toBeLessThan(1e-5);
      expect(r.gradMaxAbsDiff.x).toBeLessThan(1e-5);
      expect(r.gradMaxAbsDiff.weight).toBeLessThan(1e-5);
      expect(r.ok).toBe(true);
    });
  }

  it('a large eps (rows near zero) and the layer route through the op', async () => {
    const layer = new RMSNorm(40, 0.5);
    const x = rand([6, 40], 0.1);
    const y = layer.forward(x);
    const ref = rmsNormOp.reference({ x, weight: layer.param('weight') }, { eps: 0.5 });
    const diff = (await tf.max(tf.abs(tf.sub(y, ref))).data())[0];
    expect(diff).toBeLessThan(1e-6);
    tf.dispose([x, y, ref]);
    layer.dispose();
  });

  it('leaks no tensors through forward and both gradients, or with dx alone', async () => {
    const x = rand([5, 131]);
    const w = tf.variable(rand([131]));
    const before = tf.memory().numTensors;
    const both = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(rmsNormOp({ x: a, weight: b }, { eps: 1e-5 }))))([x, w]);
    tf.dispose(both);
    const dx = tf.grad((a: tf.Tensor) => tf.sum(rmsNormOp({ x: a, weight: w }, { eps: 1e-5 })))(x);
    await dx.data();
    dx.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, w]);
  });

  it('dispatches: 1 forward, 1 for dx, 2 more for dweight', async () => {
    const x = rand([9, 200]);
    const w = rand([200]);
    await Promise.all([x.data(), w.data()]);
    const device = webgpuBackend().device as unknown as { createBindGroup: (d: unknown) => unknown };
    const orig = device.createBindGroup;
    let n = 0;
    device.createBindGroup = (d: unknown) => {
      n++;
      return orig.call(device, d);
    };
    const count = async (f: () => tf.Tensor | tf.Tensor[]) => {
      n = 0;
      const r = [f()].flat();
      await Promise.all(r.map((t) => t.data()));
      tf.dispose(r);
      return n;
    };
    try {
      expect(await count(() => rmsNormOp({ x, weight: w }, { eps: 1e-6 }))).toBe(1);
      expect(await count(() => tf.grad((a: tf.Tensor) => rmsNormOp({ x: a, weight: w }, { eps: 1e-6 }))(x))).toBe(2);
      expect(await count(() => tf.grads((a: tf.Tensor, b: tf.Tensor) => rmsNormOp({ x: a, weight: b }, { eps: 1e-6 }))([x, w]))).toBe(4);
    } finally {
      device.createBindGroup = orig;
    }
    tf.dispose([x, w]);
  });

  it('rejects a weight of the wrong length with a PeftError', () => {
    const x = tf.ones([2, 8]);
    const w = tf.ones([7]);
    expect(() => rmsNormOp({ x, weight: w }, { eps: 1e-6 })).toThrow(/does not match/);
    tf.dispose([x, w]);
  });
});

describe.skipIf(onGpu)('RMSNorm on the CPU backends', () => {
  it('runs exactly the former tfjs composition (bit-identical)', async () => {
    const layer = new RMSNorm(37, 1e-6);
    layer.param('weight').assign(tf.add(rand([37], 0.5), 1));
    const x = rand([4, 37], 2);
    const y = layer.forward(x);
    const variance = tf.mean(tf.square(x), -1, true);
    const ref = tf.mul(layer.param('weight'), tf.mul(x, tf.rsqrt(tf.add(variance, 1e-6))));
    expect(Array.from(await y.data())).toEqual(Array.from(await ref.data()));
    tf.dispose([x, y, variance, ref]);
    layer.dispose();
  });
});
