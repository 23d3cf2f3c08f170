// The GPU profiler on webgpu (lavapipe in CI): every dispatch is counted and named, times come from
// timestamps, and profiling leaves the backend as it was. Skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../backend';
import { formatGpuProfile, profileGpu } from './profile';
import { createPeakMemoryTracker, gpuMemory } from '../../memory';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

describe.skipIf(!onGpu)('GPU profiler (webgpu)', () => {
  it('names and times every dispatch of a step', async () => {
    const a = tf.randomNormal([64, 64]);
    const b = tf.randomNormal([64, 64]);
    const before = tf.memory().numTensors;
    const { result, profile } = await profileGpu(async () => {
      const y = tf.tidy(() => tf.add(tf.matMul(a, b), tf.mul(a, 2)));
      await y.data();
      return y;
    });
    expect(profile.dispatches).toBe(3);
    expect(profile.kernels.map((k) => k.name).sort()).toEqual(expect.arrayContaining([expect.stringMatching(/MatMul/), expect.stringMatching(/^Multiply/), expect.stringMatching(/^Add/)]));
    expect(profile.kernels.reduce((s, k) => s + k.count, 0)).toBe(3);
    if (profile.timestamps) expect(profile.gpuMs).toBeGreaterThan(0);
    expect(formatGpuProfile(profile)).toMatch(/3 dispatches/);
    expect((tf.backend() as unknown as { activeTimers: unknown }).activeTimers).toBeNull();
    result.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(gpuMemory()!.bytesInUse).toBeGreaterThan(0);
    tf.dispose([a, b]);
  });

  it('a peak tracker sees the peak inside a computation, not only at its samples', async () => {
    const w = createPeakMemoryTracker();
    w.sample();
    const start = gpuMemory()!.bytesInUse;
    const y = tf.tidy(() => {
      const big = tf.ones([1 << 20]); // 4 MiB, freed before the tidy returns
      return tf.sum(tf.mul(big, 2));
    });
    await y.data();
    y.dispose();
    expect(w.peakBytes - start).toBeGreaterThanOrEqual(2 * 4 * (1 << 20)); // big and its double at once
    expect(gpuMemory()!.bytesInUse - start).toBeLessThan(1 << 20);
    w.reset();
    expect(w.peakBytes).toBe(gpuMemory()!.bytesInUse);
  });
});
