import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, runWgsl, type WgslKernel } from '@peftjs/core';

/**
 * `peftjs.Rope` on webgpu: out = x·cos + swap(x)·sinSigned (or, transposed, x·cos + swap(x·sinSigned)),
 * x [B, H, T, D], cos / sinSigned [1 or B, 1, T, D]; one thread per output element. Each product is
 * rounded to float32 and then summed, as the reference.
 */
const kernel: WgslKernel = {
  key: 'rope',
  code: () => /* wgsl */ `
struct U { n: u32, H: u32, T: u32, D: u32, tableB: u32, transpose: u32 }
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
  let t = row % u.T;
  let b = row / (u.T * u.H);
  let c = select(0u, b, u.tableB > 1u) * u.T * u.D + t * u.D + d;
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
  const [b, h, t, d] = x.shape;
  const cb = cos.shape[0];
  const ok = x.shape.length === 4 && d % 2 === 0 && x.dtype === 'float32' && cos.dtype === 'float32' && sin.dtype === 'float32' &&
    tf.util.arraysEqual(cos.shape, sin.shape) && cos.shape.length === 4 && (cb === 1 || cb === b) && cos.shape[1] === 1 && cos.shape[2] === t && cos.shape[3] === d;
  if (!ok) throw new PeftError('INVALID_ARGUMENT', `peftjs.Rope: x must be float32 [B, H, T, D] (D even) and cos / sin [1 or B, 1, T, D]; got x [${x.shape}], cos [${cos.shape}], sin [${sin.shape}]`);
  const n = b * h * t * d;
  const [out] = runWgsl(backend, kernel, {
    inputs: [x, cos, sin],
    outputs: [{ shape: [...x.shape], dtype: 'float32' }],
    uniforms: [n, h, t, d, cb, attrs.transpose ? 1 : 0].map((v) => ({ type: 'uint32' as const, data: [v] })),
    workgroups: dispatch1d(n, 64),
    name: 'Rope',
  });
  return out;
}
