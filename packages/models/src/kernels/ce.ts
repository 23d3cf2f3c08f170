import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, registerFastPath, runWgsl, toTensor, type Op, type WgslKernel } from '@peftjs/core';

/**
 * webgpu fast path of peftjs.CrossEntropy: logits [N, V] + int32 labels [N] → the mean over labels
 * ≠ -100 of −log softmax(logits)[label], never holding a full log-softmax (only logits and dlogits are
 * ever [N, V]).
 *
 *  - forward, 2 dispatches: one workgroup per row sweeps the row once with an online max / sum-exp
 *    (per thread, then a workgroup reduction) and writes the row's lse − logit[label] ([N]); a second,
 *    single-workgroup dispatch sums those and counts the valid labels → the scalar (count read on the
 *    GPU, never by the CPU; NaN when every label is -100, as torch and the reference);
 *  - backward, 1 dispatch: one workgroup per row counts the valid labels (a sweep of the [N] labels),
 *    recomputes the row's max / sum-exp (one sweep), then writes dlogits = (softmax − onehot) · dy/count
 *    (a second sweep). Rows labelled -100 are skipped in both directions (zero loss, zero gradient).
 *
 * A label outside [0, V) other than -100 counts in the mean with a zero loss and a zero gradient: the
 * one-hot route's semantics (wasm's), and the gather route's when the flat index leaves the tensor.
 */

const WG = 256;
const LOWEST = '-3.4028234663852886e38';

const reduceSnippet = /* wgsl */ `
var<workgroup> redM: array<f32, ${WG}>;
var<workgroup> redS: array<f32, ${WG}>;
var<workgroup> wLabel: i32;
// online (max, Σexp(x − max)) of this thread's strided elements, then across the workgroup
fn rowStats(lid: u32, base: u32, v: u32) -> vec2<f32> {
  var m = ${LOWEST};
  var s = 0.0;
  for (var j = lid; j < v; j = j + ${WG}u) {
    let x = logits[base + j];
    if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s = s + exp(x - m); }
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
  let r = vec2<f32>(redM[0], redS[0]);
  workgroupBarrier();
  return r;
}`;

const rowKernel: WgslKernel = {
  key: `ce-rows-${WG}`,
  code: () => /* wgsl */ `
struct U { n: u32, v: u32 }
@group(0) @binding(0) var<storage, read_write> rowLoss: array<f32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<uniform> u: U;
${reduceSnippet}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= u.n) { return; }
  if (lid == 0u) { wLabel = labels[row]; }
  let lab = workgroupUniformLoad(&wLabel);
  if (lab < 0 || u32(lab) >= u.v) {
    if (lid == 0u) { rowLoss[row] = 0.0; }
    return;
  }
  let base = row * u.v;
  let st = rowStats(lid, base, u.v);
  if (lid == 0u) { rowLoss[row] = (st.x + log(st.y)) - logits[base + u32(lab)]; }
}`,
};

const finishKernel: WgslKernel = {
  key: `ce-finish-${WG}`,
  code: () => /* wgsl */ `
struct U { n: u32, nanBits: u32 }
@group(0) @binding(0) var<storage, read_write> loss: array<f32>;
@group(0) @binding(1) var<storage, read> rowLoss: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<uniform> u: U;
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
  }
}`,
};

const backwardKernel: WgslKernel = {
  key: `ce-bwd-${WG}`,
  code: () => /* wgsl */ `
struct U { n: u32, v: u32 }
@group(0) @binding(0) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<uniform> u: U;
${reduceSnippet}
var<workgroup> redC: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= u.n) { return; }
  if (lid == 0u) { wLabel = labels[row]; }
  let lab = workgroupUniformLoad(&wLabel);
  let base = row * u.v;
  if (lab < 0 || u32(lab) >= u.v) {
    for (var j = lid; j < u.v; j = j + ${WG}u) { dlogits[base + j] = 0.0; }
    return;
  }
  // the count of valid labels, from the labels themselves
  var c = 0u;
  for (var i = lid; i < u.n; i = i + ${WG}u) { c = c + select(0u, 1u, labels[i] != -100); }
  redC[lid] = c;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k = k >> 1u) {
    if (lid < k) { redC[lid] = redC[lid] + redC[lid + k]; }
    workgroupBarrier();
  }
  let count = f32(redC[0]);
  let st = rowStats(lid, base, u.v);
  let scale = dy[0] / count;
  let inv = 1.0 / st.y;
  let tgt = u32(lab);
  for (var j = lid; j < u.v; j = j + ${WG}u) {
    let p = exp(logits[base + j] - st.x) * inv;
    dlogits[base + j] = (p - select(0.0, 1.0, j == tgt)) * scale;
  }
}`,
};

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

export function registerCrossEntropyWebgpu(op: Op<{ logits: tf.Tensor; labels: tf.Tensor }, Record<string, never>>): void {
  registerFastPath(op, {
    backendName: 'webgpu',
    kernelFunc: ({ inputs: { logits, labels }, backend }) => {
      const { n, v } = check(logits, labels);
      const [rowLoss] = runWgsl(backend, rowKernel, {
        inputs: [logits, labels],
        outputs: [{ shape: [n], dtype: 'float32' }],
        uniforms: [{ type: 'uint32', data: [n] }, { type: 'uint32', data: [v] }],
        workgroups: dispatch1d(n, 1),
        name: 'CrossEntropyRows',
      });
      const [loss] = runWgsl(backend, finishKernel, {
        inputs: [rowLoss, labels],
        outputs: [{ shape: [], dtype: 'float32' }],
        // NaN when no label is valid: a runtime value (WGSL rejects a constant NaN)
        uniforms: [{ type: 'uint32', data: [n] }, { type: 'uint32', data: [0x7fc00000] }],
        workgroups: [1, 1, 1],
        name: 'CrossEntropyMean',
      });
      (backend as { disposeData(id: unknown): void }).disposeData(rowLoss.dataId);
      return loss;
    },
    gradient: (dy, { logits, labels }) => ({
      logits: () => {
        const { n, v } = check(logits, labels);
        const [dl] = runWgsl(undefined, backwardKernel, {
          inputs: [logits, labels, dy],
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
