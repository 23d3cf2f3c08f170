import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, registerFastPath, runWgsl, toTensor, type Op, type WgslKernel } from '@peftjs/core';

/**
 * webgpu fast path of peftjs.SwiGLU, silu(gate)·up: one dispatch forward (vec4 when the size is a
 * multiple of 4), one backward writing dgate and dup together (two outputs).
 * Forward arithmetic is tfjs-webgpu's own (sigmoid = 1/(1 + exp(-x)), then (x·s)·up).
 */

const WG = 256;

const forwardKernel = (vec: boolean): WgslKernel => {
  const T = vec ? 'vec4<f32>' : 'f32';
  return {
    key: `swiglu-fwd-${vec ? 'v4' : 's'}`,
    code: () => /* wgsl */ `
struct U { n: u32 }
@group(0) @binding(0) var<storage, read_write> y: array<${T}>;
@group(0) @binding(1) var<storage, read> gate: array<${T}>;
@group(0) @binding(2) var<storage, read> up: array<${T}>;
@group(0) @binding(3) var<uniform> u: U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WG}u;
  if (i >= u.n) { return; }
  let x = gate[i];
  let s = 1.0 / (1.0 + exp(-1.0 * x));
  y[i] = (x * s) * up[i];
}`,
  };
};

const backwardKernel = (vec: boolean): WgslKernel => {
  const T = vec ? 'vec4<f32>' : 'f32';
  return {
    key: `swiglu-bwd-${vec ? 'v4' : 's'}`,
    code: () => /* wgsl */ `
struct U { n: u32 }
@group(0) @binding(0) var<storage, read_write> dgate: array<${T}>;
@group(0) @binding(1) var<storage, read_write> dup: array<${T}>;
@group(0) @binding(2) var<storage, read> dy: array<${T}>;
@group(0) @binding(3) var<storage, read> gate: array<${T}>;
@group(0) @binding(4) var<storage, read> up: array<${T}>;
@group(0) @binding(5) var<uniform> u: U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WG}u;
  if (i >= u.n) { return; }
  let x = gate[i];
  let g = dy[i];
  let s = 1.0 / (1.0 + exp(-1.0 * x));
  // d silu(x)/dx = s·(1 + x·(1 − s))
  dgate[i] = g * up[i] * (s * (1.0 + x * (1.0 - s)));
  dup[i] = g * (x * s);
}`,
  };
};

function check(gate: tf.TensorInfo, up: tf.TensorInfo): number {
  if (!tf.util.arraysEqual(gate.shape, up.shape)) {
    throw new PeftError('SHAPE_MISMATCH', `peftjs.SwiGLU: gate [${gate.shape}] and up [${up.shape}] differ`);
  }
  if (gate.dtype !== 'float32' || up.dtype !== 'float32') {
    throw new PeftError('UNSUPPORTED', `peftjs.SwiGLU on webgpu: float32 only (gate ${gate.dtype}, up ${up.dtype})`);
  }
  return tf.util.sizeFromShape(gate.shape);
}

export function registerSwiGluWebgpu(op: Op<{ gate: tf.Tensor; up: tf.Tensor }, Record<string, never>>): void {
  registerFastPath(op, {
    backendName: 'webgpu',
    kernelFunc: ({ inputs: { gate, up }, backend }) => {
      const n = check(gate, up);
      const vec = n % 4 === 0;
      const items = vec ? n / 4 : n;
      return runWgsl(backend, forwardKernel(vec), {
        inputs: [gate, up],
        outputs: [{ shape: [...gate.shape], dtype: 'float32' }],
        uniforms: [{ type: 'uint32', data: [items] }],
        workgroups: dispatch1d(items, WG),
        name: 'SwiGLU',
      })[0];
    },
    // both gradients from one dispatch, run when the gradient function is called (in the backward's own
    // scope, so an unused one is freed with it) rather than in per-input thunks
    gradient: (dy, { gate, up }) => {
      const n = check(gate, up);
      const vec = n % 4 === 0;
      const items = vec ? n / 4 : n;
      const [dg, du] = runWgsl(undefined, backwardKernel(vec), {
        inputs: [dy, gate, up],
        outputs: [{ shape: [...gate.shape], dtype: 'float32' }, { shape: [...up.shape], dtype: 'float32' }],
        uniforms: [{ type: 'uint32', data: [items] }],
        workgroups: dispatch1d(items, WG),
        name: 'SwiGLUGrad',
      });
      return { gate: toTensor(dg), up: toTensor(du) };
    },
  });
}
