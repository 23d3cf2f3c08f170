import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, registerFastPath, runWgsl, toTensor, type Op, type WgslKernel } from '@peftjs/core';

/**
 * webgpu fast path of peftjs.CrossEntropy: logits [N, V] + int32 labels [N] → the mean over labels
 * ≠ -100 of −log softmax(logits)[label], never holding a full log-softmax (only logits and dlogits are
 * ever [N, V]).
 *
 *  - forward, 2 dispatches: one workgroup per row sweeps the row once (vec4 loads when V is a multiple
 *    of 4) with an online max / Σexp (per thread, then a workgroup reduction) and writes the row's
 *    logsumexp and lse − logit[label] ([N] each); a second, one-workgroup dispatch sums those and counts
 *    the valid labels → the loss, and the count (NaN when every label is -100, as torch and the
 *    reference). The count is never read by the CPU;
 *  - the per-row logsumexp and the count are aux outputs saved for the backward (the op's
 *    `outputsToSave`), so the backward is 1 dispatch and one sweep: dlogits = (exp(x − lse) − onehot)
 *    · dy/count. Rows labelled -100 are skipped in both directions (zero loss, zero gradient).
 *
 * A label outside [0, V) other than -100 counts in the mean with a zero loss and a zero gradient: the
 * one-hot route's semantics (wasm's), and the gather route's when the flat index leaves the tensor.
 */

const WG = 256;
const LOWEST = '-3.4028234663852886e38';

/** Online (max, Σexp(x − max)) of a thread's strided elements, then across the workgroup. */
const statsSnippet = (vec: boolean) => /* wgsl */ `
var<workgroup> redM: array<f32, ${WG}>;
var<workgroup> redS: array<f32, ${WG}>;
var<workgroup> wLabel: i32;
fn rowStats(lid: u32, row: u32) -> vec2<f32> {
  var m = ${LOWEST};
  var s = 0.0;
${
  vec
    ? `  let base4 = row * (u.v / 4u);
  for (var j = lid; j < u.v / 4u; j = j + ${WG}u) {
    let x = logits4[base4 + j];
    let mx = max(max(x.x, x.y), max(x.z, x.w));
    if (mx > m) { s = s * exp(m - mx); m = mx; }
    let e = exp(x - vec4<f32>(m));
    s = s + ((e.x + e.y) + (e.z + e.w));
  }`
    : `  let base = row * u.v;
  for (var j = lid; j < u.v; j = j + ${WG}u) {
    let x = logits[base + j];
    if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s = s + exp(x - m); }
  }`
}
  redM[lid] = m;
  redS[lid] = s;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k = k >> 1u) {
    if (lid < k) {
      let m1 = redM[lid];
      let m2 = redM[lid + k];
      let mm = max(m1, m2);
      redS[lid] = redS[lid] * exp(m1 - mm) + redS[lid + k] * exp(m2 - mm);
      redM[lid] = mm;
    }
    workgroupBarrier();
  }
  return vec2<f32>(redM[0], redS[0]);
}`;

const logitsBinding = (vec: boolean, binding: number) =>
  vec
    ? `@group(0) @binding(${binding}) var<storage, read> logits4: array<vec4<f32>>;`
    : `@group(0) @binding(${binding}) var<storage, read> logits: array<f32>;`;

/** The label of the workgroup's row, uniform; -1 stands for "no loss, no gradient" (-100 or out of range). */
const labelSnippet = /* wgsl */ `
  if (lid == 0u) {
    let l = labels[row];
    wLabel = select(-1, l, l >= 0 && u32(l) < u.v);
  }
  let lab = workgroupUniformLoad(&wLabel);`;

const rowKernel = (vec: boolean): WgslKernel => ({
  key: `ce-rows-${WG}-${vec ? 'v4' : 's'}`,
  code: () => /* wgsl */ `
struct U { n: u32, v: u32 }
@group(0) @binding(0) var<storage, read_write> rowLoss: array<f32>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;
${logitsBinding(vec, 2)}
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<uniform> u: U;
${statsSnippet(vec)}
fn logitAt(i: u32) -> f32 {
  ${vec ? 'return logits4[i / 4u][i % 4u];' : 'return logits[i];'}
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= u.n) { return; }
  ${labelSnippet}
  if (lab < 0) {
    if (lid == 0u) { rowLoss[row] = 0.0; lse[row] = 0.0; }
    return;
  }
  let st = rowStats(lid, row);
  if (lid == 0u) {
    let l = st.x + log(st.y);
    lse[row] = l;
    rowLoss[row] = l - logitAt(row * u.v + u32(lab));
  }
}`,
});

const finishKernel: WgslKernel = {
  key: `ce-finish-${WG}`,
  code: () => /* wgsl */ `
struct U { n: u32, nanBits: u32 }
@group(0) @binding(0) var<storage, read_write> loss: array<f32>;
@group(0) @binding(1) var<storage, read_write> count: array<f32>;
@group(0) @binding(2) var<storage, read> rowLoss: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<uniform> u: U;
var<workgroup> red: array<vec2<f32>, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = vec2<f32>(0.0, 0.0);
  for (var i = lid; i < u.n; i = i + ${WG}u) {
    if (labels[i] != -100) { acc = acc + vec2<f32>(rowLoss[i], 1.0); }
  }
  red[lid] = acc;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k = k >> 1u) {
    if (lid < k) { red[lid] = red[lid] + red[lid + k]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let t = red[0];
    loss[0] = select(t.x / t.y, bitcast<f32>(u.nanBits), t.y == 0.0);
    count[0] = t.y;
  }
}`,
};

const backwardKernel = (vec: boolean): WgslKernel => ({
  key: `ce-bwd-${WG}-${vec ? 'v4' : 's'}`,
  code: () => {
    const T = vec ? 'vec4<f32>' : 'f32';
    return /* wgsl */ `
struct U { n: u32, v: u32 }
@group(0) @binding(0) var<storage, read_write> dlogits: array<${T}>;
@group(0) @binding(1) var<storage, read> logits: array<${T}>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> count: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<uniform> u: U;
var<workgroup> wLabel: i32;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= u.n) { return; }
  ${labelSnippet}
  let w = ${vec ? 'u.v / 4u' : 'u.v'};
  let base = row * w;
  if (lab < 0) {
    for (var j = lid; j < w; j = j + ${WG}u) { dlogits[base + j] = ${T}(0.0); }
    return;
  }
  let l = lse[row];
  let scale = dy[0] / count[0];
  let tgt = u32(lab);
  for (var j = lid; j < w; j = j + ${WG}u) {
    let p = exp(logits[base + j] - ${T}(l));
${
  vec
    ? `    let col = vec4<u32>(j * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    dlogits[base + j] = (p - select(vec4<f32>(0.0), vec4<f32>(1.0), col == vec4<u32>(tgt))) * scale;`
    : `    dlogits[base + j] = (p - select(0.0, 1.0, j == tgt)) * scale;`
}
  }
}`;
  },
});

function check(logits: tf.TensorInfo, labels: tf.TensorInfo): { n: number; v: number } {
  if (logits.shape.length !== 2 || labels.shape.length !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new PeftError('SHAPE_MISMATCH', `peftjs.CrossEntropy: logits must be [N, V] and labels [N], got [${logits.shape}] and [${labels.shape}]`);
  }
  if (logits.dtype !== 'float32' || labels.dtype !== 'int32') {
    throw new PeftError('UNSUPPORTED', `peftjs.CrossEntropy on webgpu: float32 logits and int32 labels (got ${logits.dtype}, ${labels.dtype})`);
  }
  const [n, v] = logits.shape;
  if (n * v >= 2 ** 32) throw new PeftError('UNSUPPORTED', `peftjs.CrossEntropy on webgpu: [${n}, ${v}] logits pass 2³² elements`);
  return { n, v };
}

/** The op's outputs on webgpu: [loss, per-row logsumexp [N], count of valid labels [1]] (the last two for the gradient). */
export const CROSS_ENTROPY_OUTPUTS_TO_SAVE = [false, true, true];

export function registerCrossEntropyWebgpu(op: Op<{ logits: tf.Tensor; labels: tf.Tensor }, Record<string, never>>): void {
  registerFastPath(op, {
    backendName: 'webgpu',
    kernelFunc: ({ inputs: { logits, labels }, backend }) => {
      const { n, v } = check(logits, labels);
      if (n === 0) {
        // no rows: the reference's 0/0
        const b = backend as { makeTensorInfo(shape: number[], dtype: tf.DataType, values?: Float32Array): tf.TensorInfo };
        return [b.makeTensorInfo([], 'float32', new Float32Array([NaN])), b.makeTensorInfo([0], 'float32'), b.makeTensorInfo([1], 'float32', new Float32Array([0]))];
      }
      const vec = v % 4 === 0;
      const [rowLoss, lse] = runWgsl(backend, rowKernel(vec), {
        inputs: [logits, labels],
        outputs: [{ shape: [n], dtype: 'float32' }, { shape: [n], dtype: 'float32' }],
        uniforms: [{ type: 'uint32', data: [n] }, { type: 'uint32', data: [v] }],
        workgroups: dispatch1d(n, 1),
        name: 'CrossEntropyRows',
      });
      const [loss, count] = runWgsl(backend, finishKernel, {
        inputs: [rowLoss, labels],
        outputs: [{ shape: [], dtype: 'float32' }, { shape: [1], dtype: 'float32' }],
        // NaN when no label is valid: a runtime value (WGSL rejects a constant NaN)
        uniforms: [{ type: 'uint32', data: [n] }, { type: 'uint32', data: [0x7fc00000] }],
        workgroups: [1, 1, 1],
        name: 'CrossEntropyMean',
      });
      (backend as { disposeData(id: unknown): void }).disposeData(rowLoss.dataId);
      return [loss, lse, count];
    },
    gradient: (dy, { logits, labels }, _attrs, saved) => ({
      logits: () => {
        const { n, v } = check(logits, labels);
        const [lse, count] = [saved[1], saved[2]];
        if (!lse || !count) throw new PeftError('REGISTRY', 'peftjs.CrossEntropy: the forward did not save its logsumexp (outputsToSave)');
        const vec = v % 4 === 0;
        const [dl] = runWgsl(undefined, backwardKernel(vec), {
          inputs: [logits, labels, lse, count, dy],
          outputs: [{ shape: [n, v], dtype: 'float32' }],
          uniforms: [{ type: 'uint32', data: [n] }, { type: 'uint32', data: [v] }],
          workgroups: dispatch1d(n, 1),
          name: 'CrossEntropyGrad',
        });
        return toTensor(dl);
      },
      labels: () => tf.zerosLike(labels),
    }),
  });
}
