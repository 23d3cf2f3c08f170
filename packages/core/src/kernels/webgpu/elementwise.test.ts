// The lean Add/Multiply kernels on webgpu (lavapipe in CI) give exactly tfjs-webgpu's results, and leave
// every other case to tfjs's own kernel. Skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../backend';
import { installWebgpuElementwise, uninstallWebgpuElementwise } from './elementwise';
import { profileGpu } from './profile';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

async function both(f: () => tf.Tensor): Promise<[Float32Array | Int32Array, Float32Array | Int32Array, string[]]> {
  uninstallWebgpuElementwise();
  const ref = f();
  const r = (await ref.data()) as Float32Array;
  installWebgpuElementwise();
  const { result: out, profile } = await profileGpu(async () => {
    const o = f();
    await o.data();
    return o;
  });
  const o = (await out.data()) as Float32Array;
  tf.dispose([ref, out]);
  return [r, o, profile.kernels.map((k) => k.name)];
}

describe.skipIf(!onGpu)('lean element-wise kernels (webgpu)', () => {
  const a = tf.randomNormal([7, 13], 0, 1, 'float32', 1);
  const b = tf.randomNormal([7, 13], 0, 1, 'float32', 2);
  const a4 = tf.randomNormal([6, 8], 0, 1, 'float32', 3);
  const b4 = tf.concat([tf.randomNormal([47], 0, 1, 'float32', 4), tf.tensor1d([NaN])]).reshape([6, 8]);

  it.each([
    ['add, odd size', () => tf.add(a, b), /Add\(peftjs\)/],
    ['mul, odd size', () => tf.mul(a, b), /Multiply\(peftjs\)/],
    ['add, vec4 with a NaN', () => tf.add(a4, b4), /Add\(peftjs\)/],
    ['mul, vec4 with a NaN', () => tf.mul(a4, b4), /Multiply\(peftjs\)/],
    ['mul by a scalar on the right', () => tf.mul(a, 0.37), /Multiply\(peftjs scalar\)/],
    ['add a scalar on the left', () => tf.add(tf.scalar(-2.5), a4), /Add\(peftjs scalar\)/],
    ['mul by a scalar already on the GPU', () => tf.mul(a, tf.sqrt(tf.scalar(0.49))), /Multiply\(peftjs gpu scalar\)/],
    ['add a GPU scalar of shape [1, 1] on the left', () => tf.add(tf.sqrt(tf.tensor2d([[2.25]])), a4), /Add\(peftjs gpu scalar\)/],
    ['broadcasting falls back to tfjs', () => tf.add(a, tf.randomNormal([13], 0, 1, 'float32', 5)), /^(?!.*peftjs)/],
    ['int32 falls back to tfjs', () => tf.add(tf.range(0, 1000, 1, 'int32'), tf.range(5, 1005, 1, 'int32')), /^(?!.*peftjs)/],
  ])('%s: bit-identical to tfjs', async (_n, f, kernel) => {
    const [r, o, names] = await both(f as () => tf.Tensor);
    expect(Array.from(o)).toEqual(Array.from(r));
    expect(names.length === 0 ? (kernel as RegExp).test('') : names.some((n) => (kernel as RegExp).test(n)), names.join(', ')).toBe(true);
  });

  it('leaks nothing', () => {
    installWebgpuElementwise();
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      tf.add(a, b);
      tf.mul(a, 3);
      tf.add(2, a4);
    });
    expect(tf.memory().numTensors).toBe(before);
  });
});
