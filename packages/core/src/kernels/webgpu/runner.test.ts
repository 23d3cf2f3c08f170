// The WGSL runner on the webgpu backend (lavapipe in CI): several outputs, in-place updates, uniforms,
// flat dispatch folding, and no leaked tensors. Skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../backend';
import { dispatch1d, runWgsl, toTensor } from './runner';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

const kernel = {
  key: 'test-two-outputs',
  code: () => /* wgsl */ `
    struct U { n: u32, scale: f32 }
    @group(0) @binding(0) var<storage, read_write> sum: array<f32>;
    @group(0) @binding(1) var<storage, read_write> acc: array<f32>;
    @group(0) @binding(2) var<storage, read> a: array<f32>;
    @group(0) @binding(3) var<storage, read> b: array<f32>;
    @group(0) @binding(4) var<uniform> u: U;
    @compute @workgroup_size(64)
    fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
      let i = gid.x + gid.y * nwg.x * 64u;
      if (i >= u.n) { return; }
      sum[i] = (a[i] + b[i]) * u.scale;
      acc[i] = acc[i] + a[i];
    }`,
};

describe.skipIf(!onGpu)('WGSL runner (webgpu)', () => {
  it('writes a new output and updates another tensor in place', async () => {
    const a = tf.tensor1d([1, 2, 3, 4, 5]);
    const b = tf.tensor1d([10, 20, 30, 40, 50]);
    const acc = tf.tensor1d([100, 100, 100, 100, 100]);
    const before = tf.memory().numTensors;
    const [sumInfo] = runWgsl(undefined, kernel, {
      inputs: [a, b],
      outputs: [{ shape: [5], dtype: 'float32' }, acc],
      uniforms: [{ type: 'uint32', data: [5] }, { type: 'float32', data: [0.5] }],
      workgroups: dispatch1d(5, 64),
    });
    const sum = toTensor(sumInfo);
    expect(tf.memory().numTensors).toBe(before + 1);
    expect(Array.from(await sum.data())).toEqual([5.5, 11, 16.5, 22, 27.5]);
    expect(Array.from(await acc.data())).toEqual([101, 102, 103, 104, 105]);
    tf.dispose([a, b, acc, sum]);
  });

  it('an in-place write is seen by a later read of a tensor that was read before', async () => {
    const a = tf.tensor1d([1, 1, 1]);
    const b = tf.tensor1d([0, 0, 0]);
    const acc = tf.tensor1d([5, 5, 5]);
    expect(Array.from(await acc.data())).toEqual([5, 5, 5]); // tfjs caches these values on the CPU
    const [s] = runWgsl(undefined, kernel, { inputs: [a, b], outputs: [{ shape: [3], dtype: 'float32' }, acc], uniforms: [{ type: 'uint32', data: [3] }, { type: 'float32', data: [1] }], workgroups: dispatch1d(3, 64) });
    expect(Array.from(await acc.data())).toEqual([6, 6, 6]);
    tf.dispose([a, b, acc, toTensor(s)]);
  });

  it('reads a float32 tensor that tfjs cast from int32 or bool by sharing the integer buffer', async () => {
    const ints = tf.tensor1d([1, -2, 3, 7, 0], 'int32');
    const bools = tf.tensor1d([1, 0, 1, 1, 0], 'bool');
    const fa = ints.toFloat();
    const fb = bools.toFloat();
    const acc = tf.zeros([5]);
    const before = tf.memory().numTensors;
    const [s] = runWgsl(undefined, kernel, { inputs: [fa, fb], outputs: [{ shape: [5], dtype: 'float32' }, acc], uniforms: [{ type: 'uint32', data: [5] }, { type: 'float32', data: [1] }], workgroups: dispatch1d(5, 64) });
    const sum = toTensor(s);
    expect(Array.from(await sum.data())).toEqual([2, -2, 4, 8, 0]);
    expect(Array.from(await acc.data())).toEqual([1, -2, 3, 7, 0]);
    expect(tf.memory().numTensors).toBe(before + 1);
    tf.dispose([ints, bools, fa, fb, acc, sum]);
  });

  it('folds large flat dispatches into two dimensions', () => {
    expect(dispatch1d(100, 64)).toEqual([2, 1, 1]);
    const [x, y] = dispatch1d(70000 * 64, 64);
    expect(x).toBeLessThanOrEqual(65535);
    expect(x * y).toBeGreaterThanOrEqual(70000);
  });
});
