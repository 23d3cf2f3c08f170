import * as tf from '@tensorflow/tfjs';
import { Linear, RMSNorm, dispatch1d, isRecordingGradients, runWgsl, toTensor } from '@peftjs/core';

/**
 * Inference-only fusions for the LLaMA decoder layer on webgpu, where a greedy decode step is bound by
 * dispatches (each costs tens of µs of CPU, the GPU work of a T = 1 step is a few µs):
 *
 * - `addRmsNorm`: h = x + r and n = RMSNorm(h) in one dispatch (the residual after attention and the
 *   post-attention norm).
 * - `swigluMatvec`: silu(x·W_gateᵀ) ⊙ (x·W_upᵀ) for a few rows in one dispatch, reading both weights
 *   (gate_proj, up_proj and SwiGLU were three).
 *
 * Used only when no gradient is being recorded, on webgpu, with plain (un-adapted) modules: a LoRA- or
 * LN-tuning-wrapped module, biases, or training take the ordinary path. Numerics are those of the
 * separate kernels up to float32 summation order.
 */

const WG = 256;

const addNormKernel = {
  key: 'peftjs-decode-add-rmsnorm',
  code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> h: array<f32>;
@group(0) @binding(1) var<storage, read_write> n: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
struct U { d: u32, eps: f32 }
@group(0) @binding(5) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let base = wid.x * u.d;
  var s = 0.0;
  for (var j = li; j < u.d; j = j + ${WG}u) {
    let v = x[base + j] + r[base + j];
    h[base + j] = v;
    s = s + v * v;
  }
  red[li] = s;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k = k >> 1u) {
    if (li < k) { red[li] = red[li] + red[li + k]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / f32(u.d) + u.eps);
  for (var j = li; j < u.d; j = j + ${WG}u) {
    n[base + j] = w[j] * (h[base + j] * inv);
  }
}`,
};

const MV_WG = 64;
/** Rows a swigluMatvec dispatch takes (x's rows are kept in workgroup memory). */
export const MATVEC_MAX_ROWS = 8;

const swigluKernel = {
  key: `peftjs-decode-swiglu-matvec-${MATVEC_MAX_ROWS}`,
  code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wg: array<f32>;
@group(0) @binding(3) var<storage, read> wu: array<f32>;
struct U { rows: u32, d: u32, inter: u32 }
@group(0) @binding(4) var<uniform> u: U;
var<workgroup> rg: array<f32, ${MV_WG * MATVEC_MAX_ROWS}>;
var<workgroup> ru: array<f32, ${MV_WG * MATVEC_MAX_ROWS}>;
@compute @workgroup_size(${MV_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  // one workgroup per output column j: every thread sums a strided part of both dot products, all rows
  let j = wid.x + wid.y * nwg.x;
  if (j >= u.inter) { return; }
  var ag: array<f32, ${MATVEC_MAX_ROWS}>;
  var au: array<f32, ${MATVEC_MAX_ROWS}>;
  for (var k = li; k < u.d; k = k + ${MV_WG}u) {
    let g = wg[j * u.d + k];
    let up = wu[j * u.d + k];
    for (var r = 0u; r < u.rows; r = r + 1u) {
      let xv = x[r * u.d + k];
      ag[r] = ag[r] + xv * g;
      au[r] = au[r] + xv * up;
    }
  }
  for (var r = 0u; r < u.rows; r = r + 1u) {
    rg[r * ${MV_WG}u + li] = ag[r];
    ru[r * ${MV_WG}u + li] = au[r];
  }
  workgroupBarrier();
  for (var s = ${MV_WG / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) {
      for (var r = 0u; r < u.rows; r = r + 1u) {
        rg[r * ${MV_WG}u + li] = rg[r * ${MV_WG}u + li] + rg[r * ${MV_WG}u + li + s];
        ru[r * ${MV_WG}u + li] = ru[r * ${MV_WG}u + li] + ru[r * ${MV_WG}u + li + s];
      }
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    for (var r = 0u; r < u.rows; r = r + 1u) {
      let g = rg[r * ${MV_WG}u];
      y[r * u.inter + j] = g / (1.0 + exp(-g)) * ru[r * ${MV_WG}u];
    }
  }
}`,
};

let enabled = true;
/** Switches the decode fusions off (the ordinary kernels run) or on; for comparisons. */
export function setDecodeFusions(on: boolean): void {
  enabled = on;
}

const plainRmsNorm = (m: unknown): m is RMSNorm => m instanceof RMSNorm && m.constructor === RMSNorm;
const plainLinear = (m: unknown): m is Linear => m instanceof Linear && m.constructor === Linear && !m.bias;

/** Whether the inference fusions apply now: webgpu, no gradient being recorded. */
export function decodeFusionsActive(): boolean {
  return enabled && tf.getBackend() === 'webgpu' && !isRecordingGradients();
}

/** [h, RMSNorm(h)] with h = x + r, or undefined when `norm` is not a plain RMSNorm. */
export function addRmsNorm(x: tf.Tensor, r: tf.Tensor, norm: unknown): [tf.Tensor, tf.Tensor] | undefined {
  if (!plainRmsNorm(norm) || !tf.util.arraysEqual(x.shape, r.shape) || x.dtype !== 'float32' || r.dtype !== 'float32') return undefined;
  const d = x.shape[x.shape.length - 1] as number;
  const rows = x.size / d;
  const [h, n] = runWgsl(undefined, addNormKernel, {
    inputs: [x, r, norm.param('weight')],
    outputs: [{ shape: x.shape, dtype: 'float32' }, { shape: x.shape, dtype: 'float32' }],
    uniforms: [{ type: 'uint32', data: [d] }, { type: 'float32', data: [norm.eps] }],
    workgroups: [rows, 1, 1],
    name: 'DecodeAddRmsNorm',
  });
  return [toTensor(h), toTensor(n)];
}

/** silu(x·gateᵀ) ⊙ (x·upᵀ) in one dispatch, or undefined when it does not apply (adapted or biased layers, many rows). */
export function swigluMatvec(x: tf.Tensor, gate: unknown, up: unknown): tf.Tensor | undefined {
  if (!plainLinear(gate) || !plainLinear(up) || x.dtype !== 'float32') return undefined;
  const d = x.shape[x.shape.length - 1] as number;
  const rows = x.size / d;
  if (rows > MATVEC_MAX_ROWS || gate.inFeatures !== d || up.inFeatures !== d || gate.outFeatures !== up.outFeatures) return undefined;
  const inter = gate.outFeatures;
  const [y] = runWgsl(undefined, swigluKernel, {
    inputs: [x, gate.weight, up.weight],
    outputs: [{ shape: [...x.shape.slice(0, -1), inter], dtype: 'float32' }],
    uniforms: [{ type: 'uint32', data: [rows] }, { type: 'uint32', data: [d] }, { type: 'uint32', data: [inter] }],
    workgroups: dispatch1d(inter, 1),
    name: 'DecodeSwiGLUMatvec',
  });
  return toTensor(y);
}
