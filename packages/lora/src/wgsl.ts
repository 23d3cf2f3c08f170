import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, runWgsl, type WgslKernel } from '@peftjs/core';

/**
 * LoRA's WGSL programs (the webgpu fast path of ./op.ts runs them through core's runWgsl).
 *
 * LoRA's whole forward update in one dispatch:
 *
 *     out[M, N] = base + s · (x[M, K] · A[R, K]ᵀ) · B[N, R]ᵀ
 *
 * Each workgroup owns TM rows: it computes their xa = s·x·Aᵀ [TM, R] in workgroup memory (x and A
 * staged KT columns at a time, each output summed by G threads then reduced), then writes every column
 * of those rows: out = base + xa·Bᵀ (R FMAs an element, base and out read/written coalesced along N).
 * Two tfjs-level products (xa, then the epilogue) would be two dispatches; a training step on webgpu is
 * bound by dispatches, and this work is small (r ≪ K, N). R ≤ 256.
 */

const THREADS = 256;
const KT = 64;

function lowRankPlan(R: number) {
  const TM = R <= 32 ? 8 : Math.max(1, Math.floor(THREADS / R));
  const G = Math.max(1, Math.floor(THREADS / (TM * R)));
  return { TM, G };
}

function lowRankKernel(R: number): WgslKernel {
  const { TM, G } = lowRankPlan(R);
  const outs = TM * R;
  return {
    key: `peftjsLoraFused:${R}`,
    code: () => /* wgsl */ `
struct U { M: u32, N: u32, K: u32, s: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> base: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> A: array<f32>;
@group(0) @binding(4) var<storage, read> B: array<f32>;
@group(0) @binding(5) var<uniform> u: U;
var<workgroup> xs: array<f32, ${TM * KT}>;
var<workgroup> as_: array<f32, ${R * KT}>;
var<workgroup> part: array<f32, ${G * outs}>;
var<workgroup> xa: array<f32, ${outs}>;

@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let m0 = (wid.x + wid.y * nwg.x) * ${TM}u;
  // phase 1: xa[TM][R] = x[m0.., :] · Aᵀ; thread t sums output o = t % (TM·R) over kk ≡ g (mod G)
  let o = t % ${outs}u;
  let g = t / ${outs}u;
  let row = o / ${R}u;
  let j = o % ${R}u;
  var acc = 0.0;
  for (var k0 = 0u; k0 < u.K; k0 = k0 + ${KT}u) {
    for (var i = t; i < ${TM * KT}u; i = i + ${THREADS}u) {
      let r = i / ${KT}u;
      let k = k0 + i % ${KT}u;
      var v = 0.0;
      if (m0 + r < u.M && k < u.K) { v = X[(m0 + r) * u.K + k]; }
      xs[i] = v;
    }
    for (var i = t; i < ${R * KT}u; i = i + ${THREADS}u) {
      let r = i / ${KT}u;
      let k = k0 + i % ${KT}u;
      var v = 0.0;
      if (k < u.K) { v = A[r * u.K + k]; }
      as_[i] = v;
    }
    workgroupBarrier();
    if (g < ${G}u) {
      for (var kk = g; kk < ${KT}u; kk = kk + ${G}u) {
        acc = fma(xs[row * ${KT}u + kk], as_[j * ${KT}u + kk], acc);
      }
    }
    workgroupBarrier();
  }
  if (g < ${G}u) { part[g * ${outs}u + o] = acc; }
  workgroupBarrier();
  if (t < ${outs}u) {
    var s = 0.0;
    for (var q = 0u; q < ${G}u; q = q + 1u) { s = s + part[q * ${outs}u + t]; }
    xa[t] = s * u.s;
  }
  workgroupBarrier();
  // phase 2: out[m, n] = base[m, n] + Σ_j xa[row][j] · B[n, j], consecutive threads along n
  for (var e = t; e < ${TM}u * u.N; e = e + ${THREADS}u) {
    let r = e / u.N;
    let n = e % u.N;
    let m = m0 + r;
    if (m < u.M) {
      var v = 0.0;
      for (var q = 0u; q < ${R}u; q = q + 1u) { v = fma(xa[r * ${R}u + q], B[n * ${R}u + q], v); }
      out[m * u.N + n] = base[m * u.N + n] + v;
    }
  }
}`,
  };
}

/** Rows of x one workgroup of the LoRA kernels handles at rank R. */
export function loraRowsPerWorkgroup(R: number): number {
  return lowRankPlan(R).TM;
}

/** Whether the one-dispatch LoRA update applies (float32, r ≤ 256, workgroup memory enough). */
export function loraFusedSupports(x: tf.TensorInfo, loraA: tf.TensorInfo, loraB: tf.TensorInfo, maxShared = 16384): boolean {
  const R = loraA.shape[0];
  if (loraA.shape.length !== 2 || loraB.shape.length !== 2 || loraB.shape[1] !== R || R < 1 || R > 256) return false;
  if ([x, loraA, loraB].some((t) => t.dtype !== 'float32')) return false;
  const { TM, G } = lowRankPlan(R);
  const shared = (TM * KT + R * KT + G * TM * R + TM * R) * 4;
  return shared <= maxShared;
}

/**
 * base + s·(x·Aᵀ)·Bᵀ in one dispatch: x [..., K] (rows = all but the last dim), A [R, K], B [N, R],
 * base [..., N] with the same rows. Returns a new TensorInfo shaped like base.
 */
export function runLoraFused(backend: unknown, args: { base: tf.TensorInfo; x: tf.TensorInfo; loraA: tf.TensorInfo; loraB: tf.TensorInfo; scaling: number }): tf.TensorInfo {
  const { base, x, loraA, loraB } = args;
  const K = x.shape[x.shape.length - 1];
  const M = tf.util.sizeFromShape(x.shape) / Math.max(K, 1);
  const [R, Ka] = loraA.shape;
  const N = loraB.shape[0];
  if (Ka !== K || loraB.shape[1] !== R) {
    throw new PeftError('SHAPE_MISMATCH', `LoRA update: x [${x.shape}], lora_A [${loraA.shape}], lora_B [${loraB.shape}] do not chain (A must be [r, ${K}], B [out, r])`);
  }
  if (tf.util.sizeFromShape(base.shape) !== M * N) throw new PeftError('SHAPE_MISMATCH', `LoRA update: base [${base.shape}] is not [${M} rows, ${N}]`);
  const { TM } = lowRankPlan(R);
  const [out] = runWgsl(backend, lowRankKernel(R), {
    inputs: [base, x, loraA, loraB],
    outputs: [{ shape: base.shape, dtype: 'float32' }],
    uniforms: [
      { type: 'uint32', data: [M] },
      { type: 'uint32', data: [N] },
      { type: 'uint32', data: [K] },
      { type: 'float32', data: [args.scaling] },
    ],
    workgroups: dispatch1d(M, TM),
    name: 'peftjsLoraFused',
  });
  return out;
}

/**
 * The two skinny products of LoRA's backward in one dispatch: xa = x·Aᵀ (A [R, K1]) and dyB = dy·B
 * (B [K2, R]), both [rows, R]; workgroup row y = 0 computes the first, y = 1 the second.
 */
function skinnyPairKernel(R: number): WgslKernel {
  const { TM, G } = lowRankPlan(R);
  const outs = TM * R;
  const body = (O: string, X: string, W: string, Kname: string, rk: boolean) => `
    var acc = 0.0;
    for (var k0 = 0u; k0 < u.${Kname}; k0 = k0 + ${KT}u) {
      for (var i = t; i < ${TM * KT}u; i = i + ${THREADS}u) {
        let r = i / ${KT}u;
        let k = k0 + i % ${KT}u;
        var v = 0.0;
        if (m0 + r < u.M && k < u.${Kname}) { v = ${X}[(m0 + r) * u.${Kname} + k]; }
        xs[i] = v;
      }
      for (var i = t; i < ${R * KT}u; i = i + ${THREADS}u) {
        let r = i / ${KT}u;
        let k = k0 + i % ${KT}u;
        var v = 0.0;
        if (k < u.${Kname}) { v = ${W}[${rk ? `r * u.${Kname} + k` : `k * ${R}u + r`}]; }
        ws[i] = v;
      }
      workgroupBarrier();
      if (g < ${G}u) {
        for (var kk = g; kk < ${KT}u; kk = kk + ${G}u) {
          acc = fma(xs[row * ${KT}u + kk], ws[j * ${KT}u + kk], acc);
        }
      }
      workgroupBarrier();
    }
    if (g < ${G}u) { part[g * ${outs}u + o] = acc; }
    workgroupBarrier();
    if (t < ${outs}u && m0 + t / ${R}u < u.M) {
      var s = 0.0;
      for (var q = 0u; q < ${G}u; q = q + 1u) { s = s + part[q * ${outs}u + t]; }
      ${O}[m0 * ${R}u + t] = s;
    }`;
  return {
    key: `peftjsLoraSkinnyPair:${R}`,
    code: () => /* wgsl */ `
struct U { M: u32, K1: u32, K2: u32 }
@group(0) @binding(0) var<storage, read_write> O1: array<f32>;
@group(0) @binding(1) var<storage, read_write> O2: array<f32>;
@group(0) @binding(2) var<storage, read> X1: array<f32>;
@group(0) @binding(3) var<storage, read> W1: array<f32>;
@group(0) @binding(4) var<storage, read> X2: array<f32>;
@group(0) @binding(5) var<storage, read> W2: array<f32>;
@group(0) @binding(6) var<uniform> u: U;
var<workgroup> xs: array<f32, ${TM * KT}>;
var<workgroup> ws: array<f32, ${R * KT}>;
var<workgroup> part: array<f32, ${G * outs}>;

@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let m0 = wid.x * ${TM}u;
  let o = t % ${outs}u;
  let g = t / ${outs}u;
  let row = o / ${R}u;
  let j = o % ${R}u;
  if (wid.y == 0u) {${body('O1', 'X1', 'W1', 'K1', true)}
  } else {${body('O2', 'X2', 'W2', 'K2', false)}
  }
}`,
  };
}

/**
 * [x·Aᵀ, dy·B] in one dispatch: x [rows, K1], A [R, K1], dy [rows, K2], B [K2, R] (LoRA's lora_B is
 * [out, r]: K2 = out). Returns two new TensorInfos [rows, R]; undefined where it does not apply.
 */
export function runLoraSkinnyPair(backend: unknown, x: tf.TensorInfo, loraA: tf.TensorInfo, dy: tf.TensorInfo, loraB: tf.TensorInfo, maxShared = 16384): [tf.TensorInfo, tf.TensorInfo] | undefined {
  const R = loraA.shape[0];
  const K1 = x.shape[x.shape.length - 1];
  const K2 = dy.shape[dy.shape.length - 1];
  const M = tf.util.sizeFromShape(x.shape) / Math.max(K1, 1);
  if (!loraFusedSupports(x, loraA, loraB, maxShared) || dy.dtype !== 'float32') return undefined;
  if (loraA.shape[1] !== K1 || loraB.shape[0] !== K2 || tf.util.sizeFromShape(dy.shape) !== M * K2) return undefined;
  const { TM } = lowRankPlan(R);
  if (Math.ceil(M / TM) > 65535 || M === 0) return undefined;
  const outs = runWgsl(backend, skinnyPairKernel(R), {
    inputs: [x, loraA, dy, loraB],
    outputs: [{ shape: [M, R], dtype: 'float32' }, { shape: [M, R], dtype: 'float32' }],
    uniforms: [
      { type: 'uint32', data: [M] },
      { type: 'uint32', data: [K1] },
      { type: 'uint32', data: [K2] },
    ],
    workgroups: [Math.ceil(M / TM), 2, 1],
    name: 'peftjsLoraSkinnyPair',
  });
  return [outs[0], outs[1]];
}

/**
 * LoRA's two weight gradients in one dispatch: dA = s·(dy·B)ᵀ·x [R, K1] and dB = s·dyᵀ·xa [K2, R], each a
 * sum over the rows of a skinny [rows, R] factor times a wide [rows, K] one. A workgroup owns 32 columns
 * of one of the two (the first ceil(K1/32) workgroups dA, the rest dB); its 256 threads are 32 columns ×
 * 8 row phases, each keeping R sums, reduced through workgroup memory at the end. R ≤ 16.
 */
export const LORA_GRAD_COLS = 32;
const GRAD_COLS = LORA_GRAD_COLS;
const GRAD_PHASES = 8;
export const LORA_GRAD_MAX_RANK = 16;

function loraGradKernel(R: number): WgslKernel {
  const accs = Array.from({ length: R }, (_, j) => j);
  const body = (OUT: string, W: string, P: string, Kname: string, c0: string, transposed: boolean) => `
    let col = ${c0} + c;
    ${accs.map((j) => `var a${j} = 0.0;`).join(' ')}
    if (col < u.${Kname}) {
      for (var m = h; m < u.M; m = m + ${GRAD_PHASES}u) {
        let w = ${W}[m * u.${Kname} + col];
        let p = m * ${R}u;
        ${accs.map((j) => `a${j} = fma(${P}[p + ${j}u], w, a${j});`).join('\n        ')}
      }
    }
    ${accs.map((j) => `red[(h * ${R}u + ${j}u) * ${GRAD_COLS}u + c] = a${j};`).join('\n    ')}
    workgroupBarrier();
    for (var e = t; e < ${R * GRAD_COLS}u; e = e + ${GRAD_PHASES * GRAD_COLS}u) {
      let j = e / ${GRAD_COLS}u;
      let cc = e % ${GRAD_COLS}u;
      let col2 = ${c0} + cc;
      if (col2 < u.${Kname}) {
        var s = 0.0;
        for (var q = 0u; q < ${GRAD_PHASES}u; q = q + 1u) { s = s + red[(q * ${R}u + j) * ${GRAD_COLS}u + cc]; }
        ${OUT}[${transposed ? `col2 * ${R}u + j` : `j * u.${Kname} + col2`}] = s * u.s;
      }
    }`;
  return {
    key: `peftjsLoraGradAB:${R}`,
    code: () => /* wgsl */ `
struct U { M: u32, K1: u32, K2: u32, blocks1: u32, s: f32 }
@group(0) @binding(0) var<storage, read_write> dA: array<f32>;
@group(0) @binding(1) var<storage, read_write> dB: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> DYB: array<f32>;
@group(0) @binding(4) var<storage, read> DY: array<f32>;
@group(0) @binding(5) var<storage, read> XA: array<f32>;
@group(0) @binding(6) var<uniform> u: U;
var<workgroup> red: array<f32, ${GRAD_PHASES * R * GRAD_COLS}>;

@compute @workgroup_size(${GRAD_PHASES * GRAD_COLS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let c = t % ${GRAD_COLS}u;
  let h = t / ${GRAD_COLS}u;
  if (wid.x < u.blocks1) {${body('dA', 'X', 'DYB', 'K1', `wid.x * ${GRAD_COLS}u`, false)}
  } else {${body('dB', 'DY', 'XA', 'K2', `(wid.x - u.blocks1) * ${GRAD_COLS}u`, true)}
  }
}`,
  };
}

/**
 * [dA, dB] = [s·dyBᵀ·x, s·dyᵀ·xa] in one dispatch: x [rows, K1], dyB [rows, R], dy [rows, K2], xa
 * [rows, R] → dA [R, K1], dB [K2, R]. Undefined where it does not apply (R > 16, non-float32).
 */
export function runLoraGradAB(backend: unknown, args: { x: tf.TensorInfo; dyB: tf.TensorInfo; dy: tf.TensorInfo; xa: tf.TensorInfo; scaling: number }): [tf.TensorInfo, tf.TensorInfo] | undefined {
  const { x, dyB, dy, xa } = args;
  const R = dyB.shape[dyB.shape.length - 1];
  const K1 = x.shape[x.shape.length - 1];
  const K2 = dy.shape[dy.shape.length - 1];
  const M = tf.util.sizeFromShape(x.shape) / Math.max(K1, 1);
  if (R < 1 || R > LORA_GRAD_MAX_RANK || xa.shape[xa.shape.length - 1] !== R || K1 === 0 || K2 === 0) return undefined;
  if ([x, dyB, dy, xa].some((t) => t.dtype !== 'float32')) return undefined;
  if (tf.util.sizeFromShape(dyB.shape) !== M * R || tf.util.sizeFromShape(xa.shape) !== M * R || tf.util.sizeFromShape(dy.shape) !== M * K2) return undefined;
  const blocks1 = Math.ceil(K1 / GRAD_COLS);
  const blocks = blocks1 + Math.ceil(K2 / GRAD_COLS);
  if (blocks > 65535) return undefined;
  const outs = runWgsl(backend, loraGradKernel(R), {
    inputs: [x, dyB, dy, xa],
    outputs: [{ shape: [R, K1], dtype: 'float32' }, { shape: [K2, R], dtype: 'float32' }],
    uniforms: [
      { type: 'uint32', data: [M] },
      { type: 'uint32', data: [K1] },
      { type: 'uint32', data: [K2] },
      { type: 'uint32', data: [blocks1] },
      { type: 'float32', data: [args.scaling] },
    ],
    workgroups: [blocks, 1, 1],
    name: 'peftjsLoraGradAB',
  });
  return [outs[0], outs[1]];
}
