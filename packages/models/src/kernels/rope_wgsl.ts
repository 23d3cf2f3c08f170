import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, runWgsl, type WgslKernel } from '@peftjs/core';

/**
 * `peftjs.Rope` on webgpu: out = x·cos + swap(x)·sinSigned (or, transposed, x·cos + swap(x·sinSigned)),
 * x [B, H, T, D], cos / sinSigned [1 or B, 1, T, D] — or any x [B, A1, A2, D] with tables
 * [1 or B, 1 or A1, 1 or A2, D] (the token-major [B, T, H, D] with [1 or B, T, 1, D] tables the flash
 * attention path uses); one thread per output element.
 */
const kernel: WgslKernel = {
  key: 'rope:bcast',
  code: () => /* wgsl */ `
struct U { n: u32, A1: u32, A2: u32, D: u32, c0: u32, c1: u32, c2: u32, transpose: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cosT: array<f32>;
@group(0) @binding(3) var<storage, read> sinT: array<f32>;
@group(0) @binding(4) var<uniform> u: U;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= u.n) { return; }
  let half = u.D / 2u;
  let d = i % u.D;
  let row = i / u.D;
  let a2 = row % u.A2;
  let a1 = (row / u.A2) % u.A1;
  let b = row / (u.A2 * u.A1);
  let c = ((select(0u, b, u.c0 > 1u) * u.c1 + select(0u, a1, u.c1 > 1u)) * u.c2 + select(0u, a2, u.c2 > 1u)) * u.D + d;
  let lo = d < half;
  let partner = select(i - half, i + half, lo);
  // the sin entry: the output's own, or (transposed) the partner's
  let sc = select(c, select(c - half, c + half, lo), u.transpose != 0u);
  out[i] = x[i] * cosT[c] + x[partner] * sinT[sc];
}`,
};

export function ropeWebgpu({ inputs, attrs, backend }: { inputs: { x: tf.Tensor; cos: tf.Tensor; sin: tf.Tensor }; attrs: { transpose?: boolean }; backend: unknown }): tf.TensorInfo {
  const x = inputs.x as unknown as tf.TensorInfo;
  const cos = inputs.cos as unknown as tf.TensorInfo;
  const sin = inputs.sin as unknown as tf.TensorInfo;
  const [b, a1, a2, d] = x.shape;
  const [c0, c1, c2] = cos.shape;
  const fits = (c: number, n: number) => c === 1 || c === n;
  const ok = x.shape.length === 4 && d % 2 === 0 && x.dtype === 'float32' && cos.dtype === 'float32' && sin.dtype === 'float32' &&
    tf.util.arraysEqual(cos.shape, sin.shape) && cos.shape.length === 4 && fits(c0, b) && fits(c1, a1) && fits(c2, a2) && cos.shape[3] === d;
  if (!ok) throw new PeftError('INVALID_ARGUMENT', `peftjs.Rope: x must be float32 [B, H, T, D] (D even) and cos / sin [1 or B, 1, T, D] (or broadcastable to x); got x [${x.shape}], cos [${cos.shape}], sin [${sin.shape}]`);
  const n = b * a1 * a2 * d;
  const [out] = runWgsl(backend, kernel, {
    inputs: [x, cos, sin],
    outputs: [{ shape: [...x.shape], dtype: 'float32' }],
    uniforms: [n, a1, a2, d, c0, c1, c2, attrs.transpose ? 1 : 0].map((v) => ({ type: 'uint32' as const, data: [v] })),
    workgroups: dispatch1d(n, 64),
    name: 'Rope',
  });
  return out;
}
