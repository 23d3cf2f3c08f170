// The fused gradient norm on webgpu (lavapipe in CI) against the tfjs composition, with many tensors of
// odd sizes (more than one group, sizes not multiples of the workgroup, an empty-ish one), no leaks.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@peftjs/core';
import { gradNormWebgpu } from './gradnorm_webgpu';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

describe.skipIf(!onGpu)('fused gradient norm (webgpu)', () => {
  it('equals sqrt(Σ sum(g²)) over 19 tensors of odd sizes', async () => {
    const sizes = [1, 3, 255, 256, 257, 4608, 70000, 8, 9, 1000, 17, 5000, 1, 2, 333, 4096, 12345, 7, 64];
    const gs = sizes.map((n, i) => tf.randomNormal([n], 0, 1 + i / 10, 'float32', i + 1));
    const before = tf.memory().numTensors;
    const norm = gradNormWebgpu(gs);
    const ref = tf.tidy(() => tf.sqrt(tf.addN(gs.map((g) => tf.sum(tf.square(g))).slice(0, 8)).add(tf.addN(gs.slice(8).map((g) => tf.sum(tf.square(g)))))));
    const [a, b] = [(await norm.data())[0], (await ref.data())[0]];
    expect(Math.abs(a - b) / b).toBeLessThan(1e-5);
    tf.dispose([norm, ref]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose(gs);
  });

  it('is NaN when a gradient holds a NaN (the non-finite step check relies on it)', async () => {
    const gs = [tf.tensor1d([1, 2]), tf.tensor1d([NaN, 0, 1])];
    const n = gradNormWebgpu(gs);
    expect(Number.isNaN((await n.data())[0])).toBe(true);
    tf.dispose([n, ...gs]);
  });
});
