import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../../errors';
import { defineOp, registerFastPath } from '../registry';
import { dispatch1d, runWgsl, toTensor, webgpuBackend, type WgslKernel } from './runner';

/**
 * LLaMA's RMSNorm as a kernel op: y = weight · (x · rsqrt(mean(x²) + eps)) over the last dim.
 * The reference is exactly the tfjs composition RMSNorm.forward has always run (wasm/cpu run it as is).
 *
 * webgpu fast path (3 WGSL kernels, one dispatch each):
 *  - forward: one workgroup per row: Σx² (workgroup tree reduction), then y in a second sweep of the row;
 *  - dx: one workgroup per row: Σx² and Σ w·dy·x in one sweep, then
 *    dx = r·w·dy − x · r³·Σ(w·dy·x)/d, r = rsqrt(Σx²/d + eps);
 *  - dweight (a thunk: only when the weight is trained; in LoRA it is frozen): a two-stage reduction,
 *    partial Σ_rows dy·x·r over blocks of rows [blocks, d], then the blocks summed [d] (two dispatches).
 */
export const rmsNormOp = defineOp<{ x: tf.Tensor; weight: tf.Tensor }, { eps: number }>({
  name: 'peftjs.RmsNorm',
  inputNames: ['x', 'weight'],
  reference: ({ x, weight }, { eps }) => {
    const variance = tf.mean(tf.square(x), -1, true);
    return tf.mul(weight, tf.mul(x, tf.rsqrt(tf.add(variance, eps))));
  },
  describe: 'x [..., d], weight [d]',
});

/** Threads per workgroup of the row kernels. */
const WG = 128;
/** Rows per workgroup in dweight's first stage. */
const RB = 16;

/** Tree reduction of `red` (WG entries of type T) into red[0]; every thread of the workgroup calls it. */
const reduceSnippet = (name: string, type: string) => /* wgsl */ `
fn ${name}(lid: u32, v: ${type}) -> ${type} {
  red[lid] = v;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k = k >> 1u) {
    if (lid < k) { red[lid] = red[lid] + red[lid + k]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;

const forwardKernel: WgslKernel = {
  key: `rmsnorm-fwd-${WG}`,
  code: () => /* wgsl */ `
struct U { rows: u32, d: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
${reduceSnippet('wgSum', 'f32')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= u.rows) { return; }
  let base = row * u.d;
  var s = 0.0;
  for (var j = lid; j < u.d; j = j + ${WG}u) { let v = x[base + j]; s = s + v * v; }
  let total = wgSum(lid, s);
  let r = inverseSqrt(total / f32(u.d) + u.eps);
  for (var j = lid; j < u.d; j = j + ${WG}u) { y[base + j] = w[j] * (x[base + j] * r); }
}`,
};

const dxKernel: WgslKernel = {
  key: `rmsnorm-dx-${WG}`,
  code: () => /* wgsl */ `
struct U { rows: u32, d: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> dx: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<uniform> u: U;
var<workgroup> red: array<vec2<f32>, ${WG}>;
${reduceSnippet('wgSum2', 'vec2<f32>')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= u.rows) { return; }
  let base = row * u.d;
  var s = vec2<f32>(0.0, 0.0);
  for (var j = lid; j < u.d; j = j + ${WG}u) {
    let xv = x[base + j];
    s = s + vec2<f32>(xv * xv, w[j] * dy[base + j] * xv);
  }
  let t = wgSum2(lid, s);
  let fd = f32(u.d);
  let r = inverseSqrt(t.x / fd + u.eps);
  let c = r * r * r * t.y / fd;
  for (var j = lid; j < u.d; j = j + ${WG}u) {
    dx[base + j] = r * (w[j] * dy[base + j]) - x[base + j] * c;
  }
}`,
};

const dwPartialKernel: WgslKernel = {
  key: `rmsnorm-dw1-${WG}-${RB}`,
  code: () => /* wgsl */ `
struct U { rows: u32, d: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> part: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> rr: array<f32, ${RB}>;
${reduceSnippet('wgSum', 'f32')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let blk = wid.x + wid.y * nwg.x;
  let row0 = blk * ${RB}u;
  if (row0 >= u.rows) { return; }
  let nr = min(${RB}u, u.rows - row0);
  for (var i = 0u; i < nr; i = i + 1u) {
    let base = (row0 + i) * u.d;
    var s = 0.0;
    for (var j = lid; j < u.d; j = j + ${WG}u) { let v = x[base + j]; s = s + v * v; }
    let total = wgSum(lid, s);
    if (lid == 0u) { rr[i] = inverseSqrt(total / f32(u.d) + u.eps); }
  }
  workgroupBarrier();
  for (var j = lid; j < u.d; j = j + ${WG}u) {
    var acc = 0.0;
    for (var i = 0u; i < nr; i = i + 1u) {
      let k = (row0 + i) * u.d + j;
      acc = acc + dy[k] * (x[k] * rr[i]);
    }
    part[blk * u.d + j] = acc;
  }
}`,
};

const dwSumKernel: WgslKernel = {
  key: 'rmsnorm-dw2',
  code: () => /* wgsl */ `
struct U { blocks: u32, d: u32 }
@group(0) @binding(0) var<storage, read_write> dw: array<f32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<uniform> u: U;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * 64u;
  if (j >= u.d) { return; }
  var acc = 0.0;
  for (var b = 0u; b < u.blocks; b = b + 1u) { acc = acc + part[b * u.d + j]; }
  dw[j] = acc;
}`,
};

function rowsOf(x: tf.TensorInfo, weight: tf.TensorInfo): { rows: number; d: number } {
  const d = x.shape[x.shape.length - 1] ?? 1;
  if (weight.shape.length !== 1 || weight.shape[0] !== d) {
    throw new PeftError('SHAPE_MISMATCH', `peftjs.RmsNorm: weight [${weight.shape}] does not match the last dim of x [${x.shape}]`);
  }
  if (x.dtype !== 'float32' || weight.dtype !== 'float32') {
    throw new PeftError('UNSUPPORTED', `peftjs.RmsNorm on webgpu: float32 only (x ${x.dtype}, weight ${weight.dtype})`);
  }
  return { rows: tf.util.sizeFromShape(x.shape) / d, d };
}

const uniforms = (rows: number, d: number, eps: number) => [
  { type: 'uint32' as const, data: [rows] },
  { type: 'uint32' as const, data: [d] },
  { type: 'float32' as const, data: [eps] },
];

/** dweight = Σ_rows dy · x · r: partial sums over blocks of RB rows, then over the blocks. */
function rmsNormWeightGrad(dy: tf.Tensor, x: tf.Tensor, eps: number): tf.Tensor {
  const d = x.shape[x.shape.length - 1] ?? 1;
  const rows = x.size / d;
  const blocks = Math.ceil(rows / RB);
  const backend = webgpuBackend();
  const [part] = runWgsl(backend, dwPartialKernel, {
    inputs: [dy, x],
    outputs: [{ shape: [blocks, d], dtype: 'float32' }],
    uniforms: uniforms(rows, d, eps),
    workgroups: dispatch1d(blocks, 1),
    name: 'RmsNormDWeight',
  });
  const [dw] = runWgsl(backend, dwSumKernel, {
    inputs: [part],
    outputs: [{ shape: [d], dtype: 'float32' }],
    uniforms: [{ type: 'uint32', data: [blocks] }, { type: 'uint32', data: [d] }],
    workgroups: dispatch1d(d, 64),
    name: 'RmsNormDWeightSum',
  });
  toTensor(part).dispose();
  return toTensor(dw);
}

registerFastPath(rmsNormOp, {
  backendName: 'webgpu',
  kernelFunc: ({ inputs: { x, weight }, attrs: { eps }, backend }) => {
    const { rows, d } = rowsOf(x, weight);
    return runWgsl(backend, forwardKernel, {
      inputs: [x, weight],
      outputs: [{ shape: [...x.shape], dtype: 'float32' }],
      uniforms: uniforms(rows, d, eps),
      workgroups: dispatch1d(rows, 1),
      name: 'RmsNorm',
    })[0];
  },
  gradient: (dy, { x, weight }, { eps }) => ({
    x: () => {
      const { rows, d } = rowsOf(x, weight);
      const [dx] = runWgsl(undefined, dxKernel, {
        inputs: [dy, x, weight],
        outputs: [{ shape: [...x.shape], dtype: 'float32' }],
        uniforms: uniforms(rows, d, eps),
        workgroups: dispatch1d(rows, 1),
        name: 'RmsNormDx',
      });
      return toTensor(dx);
    },
    weight: () => rmsNormWeightGrad(dy, x, eps),
  }),
});
