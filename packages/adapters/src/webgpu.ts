import * as tf from '@tensorflow/tfjs';
import { PeftError, WGSL_MATMUL, disposeInfos, dispatch1d, fusedMatMul, registerFastPath, runWgsl, view2d, wgslMatmul } from '@peftjs/core';
import { adapterActivation, bottleneckAdapterOp, type BottleneckInputs } from './op';

/**
 * The webgpu fast path of `peftjs.BottleneckAdapter`, on core's WGSL matmul and runner (public exports only):
 *  - forward: z = x·Wdᵀ + bd (one matmul, bias in its epilogue), act(z) (one element-wise dispatch), then
 *    either residual + (act·Wuᵀ + bu) in the second matmul's epilogue (scaling 1, no scale tensor), or that
 *    product and one epilogue dispatch residual + s·u·scale (scale broadcast, up to rank 4).
 *  - backward: z recomputed (one matmul), du = s·scale·dy, da = du·Wu, dz = da·act'(z) in the pass's scope;
 *    then dx = dz·Wd, dWd = dzᵀ·x, dWu = duᵀ·act(z) with the transposes in the matmul's layout; the
 *    residual's gradient is dy (a reshape).
 * It carries core's WGSL_MATMUL tag (`setBackendFastPaths('webgpu', false, WGSL_MATMUL)` parks it).
 */

type Info = tf.TensorInfo;

/** WGSL of the activation of `v` (f32). erf: Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-7); tanh without overflow. */
const ACT_WGSL: Record<string, string> = {
  relu: 'max(v, 0.0)',
  tanh: 'sign(v) * (1.0 - exp(-2.0 * abs(v))) / (1.0 + exp(-2.0 * abs(v)))',
  swish: 'v / (1.0 + exp(-v))',
  silu: 'v / (1.0 + exp(-v))',
  gelu: '0.5 * v * (1.0 + erf_(v * 0.7071067811865476))',
};

const ERF_WGSL = /* wgsl */ `
fn erf_(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - p * exp(-x * x));
}`;

function actKernel(activation: string) {
  return {
    key: `peftjs-bottleneck-act-${activation}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> z: array<f32>;
struct U { n: u32 }
@group(0) @binding(2) var<uniform> u: U;
${activation === 'gelu' ? ERF_WGSL : ''}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i < u.n) { let v = z[i]; y[i] = ${ACT_WGSL[activation]}; }
}`,
  };
}

/** y = r + s·up·scale, scale broadcast against y (shapes padded to rank 4; a stride of 0 broadcasts). */
function epilogueKernel(withScale: boolean) {
  return {
    key: `peftjs-bottleneck-epilogue-${withScale ? 'scale' : 'plain'}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> r: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
${withScale ? '@group(0) @binding(3) var<storage, read> sc: array<f32>;' : ''}
struct U { n: u32, d1: u32, d2: u32, d3: u32, s0: u32, s1: u32, s2: u32, s3: u32, s: f32 }
@group(0) @binding(${withScale ? 4 : 3}) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i >= u.n) { return; }
  var f = u.s;
  ${withScale ? `let c3 = i % u.d3; let q2 = i / u.d3; let c2 = q2 % u.d2; let q1 = q2 / u.d2; let c1 = q1 % u.d1; let c0 = q1 / u.d1;
  f = f * sc[c0 * u.s0 + c1 * u.s1 + c2 * u.s2 + c3 * u.s3];` : ''}
  y[i] = r[i] + up[i] * f;
}`,
  };
}

/** Whether the fast path takes these shapes (float32, output of rank ≤ 4, scale broadcastable to it); else the reference runs. */
function supported(inputs: Record<string, Info | undefined>): boolean {
  const { x, residual, scale } = inputs;
  if (!x || !residual) return false;
  if (Object.values(inputs).some((t) => t && t.dtype !== 'float32')) return false;
  if (residual.shape.length > 4 || tf.util.sizeFromShape(residual.shape) === 0) return false;
  if (!scale) return true;
  if (scale.shape.length > residual.shape.length) return false;
  const off = residual.shape.length - scale.shape.length;
  return scale.shape.every((d, i) => d === 1 || d === residual.shape[off + i]);
}

/** Strides of `scale` against an output of shape `out`, both padded to rank 4 (0 where scale broadcasts). */
function broadcastStrides(scale: number[], out: number[]): { dims: number[]; strides: number[] } {
  const dims = [...new Array(4 - out.length).fill(1), ...out];
  const sc = [...new Array(4 - scale.length).fill(1), ...scale];
  const strides = [0, 0, 0, 0];
  let acc = 1;
  for (let k = 3; k >= 0; k--) {
    strides[k] = sc[k] === 1 ? 0 : acc;
    acc *= sc[k];
  }
  return { dims, strides };
}

function activationGrad(kind: string, z: tf.Tensor): tf.Tensor {
  switch (kind) {
    case 'relu':
      return tf.cast(tf.greater(z, 0), 'float32');
    case 'tanh': {
      const t = tf.tanh(z);
      return tf.sub(1, tf.mul(t, t));
    }
    case 'gelu':
      // Φ(z) + z·φ(z)
      return tf.add(tf.mul(0.5, tf.add(1, tf.erf(tf.mul(z, Math.SQRT1_2)))), tf.mul(z, tf.mul(Math.sqrt(0.5 / Math.PI), tf.exp(tf.mul(tf.square(z), -0.5)))));
    default: {
      // swish / silu: σ(z)·(1 + z·(1 − σ(z)))
      const s = tf.sigmoid(z);
      return tf.mul(s, tf.add(1, tf.mul(z, tf.sub(1, s))));
    }
  }
}

/** Sums g over the dims `shape` broadcasts, then reshapes to `shape`. */
function sumToShape(g: tf.Tensor, shape: number[]): tf.Tensor {
  const full = [...new Array(g.shape.length - shape.length).fill(1), ...shape];
  const axes = g.shape.map((d, i) => (full[i] === 1 && d !== 1 ? i : -1)).filter((i) => i >= 0);
  return tf.reshape(axes.length ? tf.sum(g, axes) : g, shape);
}

const rows = (t: tf.Tensor): tf.Tensor2D => tf.reshape(t, [-1, t.shape[t.shape.length - 1] as number]) as tf.Tensor2D;

registerFastPath(bottleneckAdapterOp, {
  backendName: 'webgpu',
  tags: [WGSL_MATMUL],
  kernelFunc: ({ inputs, attrs, backend }) => {
    const ins = inputs as unknown as Record<keyof BottleneckInputs, Info | undefined>;
    const { x, residual, downWeight, downBias, upWeight, upBias, scale } = ins as Record<keyof BottleneckInputs, Info> & { scale?: Info };
    if (!supported(ins) || !(attrs.activation in ACT_WGSL)) {
      throw new PeftError('UNSUPPORTED', `peftjs.BottleneckAdapter on webgpu: float32 tensors, an output of rank 1 to 4 and a scale broadcastable to it are needed (x [${x.shape}], residual [${residual.shape}], scale [${scale?.shape ?? ''}], activation ${attrs.activation}); setBackendFastPaths('webgpu', false, WGSL_MATMUL) runs the reference`);
    }
    const z = wgslMatmul(backend, { a: view2d(x), b: downWeight, transB: true, bias: downBias }); // [rows, r]
    const n = tf.util.sizeFromShape(z.shape);
    const a = runWgsl(backend, actKernel(attrs.activation), {
      inputs: [z],
      outputs: [{ shape: z.shape, dtype: 'float32' }],
      uniforms: [{ type: 'uint32', data: [n] }],
      workgroups: dispatch1d(n, 256),
      name: `BottleneckAct(${attrs.activation})`,
    })[0];
    disposeInfos(backend, z);
    if (!scale && attrs.scaling === 1) {
      const out = wgslMatmul(backend, { a, b: upWeight, transB: true, bias: upBias, c: view2d(residual), outShape: residual.shape });
      disposeInfos(backend, a);
      return out;
    }
    const up = wgslMatmul(backend, { a, b: upWeight, transB: true, bias: upBias }); // [rows, d]
    disposeInfos(backend, a);
    const total = tf.util.sizeFromShape(residual.shape);
    const { dims, strides } = broadcastStrides(scale ? scale.shape : [1], residual.shape);
    const out = runWgsl(backend, epilogueKernel(!!scale), {
      inputs: scale ? [residual, up, scale] : [residual, up],
      outputs: [{ shape: residual.shape, dtype: 'float32' }],
      uniforms: [
        { type: 'uint32', data: [total] },
        { type: 'uint32', data: [dims[1]] },
        { type: 'uint32', data: [dims[2]] },
        { type: 'uint32', data: [dims[3]] },
        ...strides.map((s) => ({ type: 'uint32' as const, data: [s] })),
        { type: 'float32', data: [attrs.scaling] },
      ],
      workgroups: dispatch1d(total, 256),
      name: 'BottleneckEpilogue',
    })[0];
    disposeInfos(backend, up);
    return out;
  },
  gradient: (dy, { x, residual, downWeight, downBias, upWeight, upBias, scale }, { activation, scaling }) => {
    // shared by several gradients: computed here, in the backward pass's scope (a thunk's tidy would free them)
    const x2 = rows(x);
    const z = fusedMatMul(x2, downWeight, { transB: true, bias: downBias });
    const act = adapterActivation(activation, z);
    const factor = scale ? tf.mul(scale, scaling) : null;
    const du = rows(factor ? tf.mul(dy, factor) : scaling === 1 ? dy : tf.mul(dy, scaling)); // [rows, d]
    const dz = tf.mul(fusedMatMul(du, upWeight), activationGrad(activation, z)); // [rows, r]
    return {
      x: () => tf.reshape(fusedMatMul(dz, downWeight), x.shape),
      residual: () => tf.reshape(dy, residual.shape),
      downWeight: () => fusedMatMul(dz, x2, { transA: true }), // [r, d]
      downBias: () => tf.sum(dz, 0),
      upWeight: () => fusedMatMul(du, act, { transA: true }), // [d, r]
      upBias: () => tf.sum(du, 0),
      ...(scale
        ? { scale: () => sumToShape(tf.mul(tf.mul(tf.reshape(fusedMatMul(act, upWeight, { transB: true, bias: upBias }), dy.shape), dy), scaling), scale.shape) }
        : {}),
    };
  },
});
