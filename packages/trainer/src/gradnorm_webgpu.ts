import * as tf from '@tensorflow/tfjs';
import { runWgsl, toTensor } from '@peftjs/core';

/**
 * The global L2 norm of many gradients on webgpu in a few dispatches: each dispatch reads up to
 * GROUP tensors and writes, per tensor, WG_PER_TENSOR partial sums of squares (every workgroup strides
 * over its tensor); one tfjs sum and sqrt finish it. tfjs's composition takes a Square and a Sum per
 * tensor plus AddNs — about 2 dispatches per parameter (240 for LoRA r=8 on q,v of 30 layers).
 */
const GROUP = 8;
const WG_PER_TENSOR = 16;
const WG = 256;

function kernel(k: number) {
  const binds = Array.from({ length: k }, (_, i) => `@group(0) @binding(${i + 1}) var<storage, read> g${i}: array<f32>;`).join('\n');
  const cases = Array.from({ length: k }, (_, i) => `      case ${i}u: { for (var e = start; e < n; e = e + stride) { let x = g${i}[e]; acc = acc + x * x; } }`).join('\n');
  return {
    key: `peftjs-gradnorm-partial-${k}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> partial: array<f32>;
${binds}
struct U { sizes: array<vec4<u32>, ${Math.ceil(k / 4)}> }
@group(0) @binding(${k + 1}) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wid.x / ${WG_PER_TENSOR}u;
  let part = wid.x % ${WG_PER_TENSOR}u;
  let n = u.sizes[t / 4u][t % 4u];
  let start = part * ${WG}u + lid.x;
  let stride = ${WG * WG_PER_TENSOR}u;
  var acc = 0.0;
  switch (t) {
${cases}
    default: {}
  }
  red[lid.x] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid.x < s) { red[lid.x] = red[lid.x] + red[lid.x + s]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { partial[wid.x] = red[0]; }
}`,
  };
}

/** sqrt(Σ‖g‖²) over every gradient, as a scalar tensor on the GPU (no read). */
export function gradNormWebgpu(grads: tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => {
    const partials: tf.Tensor[] = [];
    for (let i = 0; i < grads.length; i += GROUP) {
      const group = grads.slice(i, i + GROUP);
      const k = group.length;
      const sizes = group.map((g) => g.size);
      while (sizes.length % 4) sizes.push(0);
      const [p] = runWgsl(undefined, kernel(k), {
        inputs: group,
        outputs: [{ shape: [k * WG_PER_TENSOR], dtype: 'float32' }],
        uniforms: Array.from({ length: sizes.length / 4 }, (_, j) => ({ type: 'uint32' as const, data: sizes.slice(4 * j, 4 * j + 4) })),
        workgroups: [k * WG_PER_TENSOR, 1, 1],
        name: 'GradNormPartial',
      });
      partials.push(toTensor(p));
    }
    const all = partials.length === 1 ? partials[0] : tf.concat(partials);
    return tf.sqrt(tf.sum(all)) as tf.Scalar;
  });
}
