import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, runWgsl, toTensor, webgpuBackend, type Uniform, type WgslKernel } from '@peftjs/core';

/**
 * Causal grouped-query flash attention in WGSL (tfjs-webgpu's command stream, through core's runWgsl).
 *
 * Layouts (all float32, contiguous):
 * - q [B, H, T, hd], pre-scaled by 1/√hd; read as the folded [B, kvH, R = nRep·T, hd] (a free view: the
 *   nRep query heads that share a kv head are consecutive row blocks of T rows each);
 * - k, v [B, kvH, S, hd]; queries sit at positions past..past+T−1 with past = S − T (causal);
 * - keep [B, S] (optional): 1 for a key that may be seen, 0 for a padded one;
 * - out [B, T, H·hd] (what o_proj reads: no transpose after attention); lse [B, H, T] (per-row logsumexp
 *   of the visible scores, saved for the backward; 3e38 for a row that sees no key, whose output is 0).
 *
 * Forward: one workgroup per (64 folded rows, kv head, batch), one thread per row (q and the output
 * accumulator in registers, vec4); K/V tiles of BC keys in workgroup memory; online softmax per tile.
 * Decode (R small, S long): S is split across workgroups (flash-decoding), each writing a partial
 * (max, sum, unnormalised output) that a combine kernel merges.
 * Backward (FlashAttention-2): dQ (+ D = rowsum(dO∘O)) with one thread per row over key tiles, then
 * dK/dV with one thread per key over query tiles (summing over the query heads sharing the kv head);
 * when there are few key tiles the rows are split across workgroups and the partial dK/dV summed.
 */

/**
 * Keys per tile in the forward / dQ kernels, from hd: the K and V tiles plus the tile's keep flags fit
 * WebGPU's default 16 KB of workgroup memory (31 keys at hd 64).
 */
function keyTile(hd: number): number {
  return Math.max(4, Math.min(32, Math.floor(2016 / hd)));
}
const WG = 64;
/** Query rows per tile in the dK/dV kernel. */
const BR = 16;
/** 3e38: the logsumexp of a row that sees no key (exp(s − lse) is then 0). */
const BLIND = '3.0e38';

export interface FlashShapes {
  b: number;
  h: number;
  kvH: number;
  t: number;
  s: number;
  hd: number;
}

/**
 * The largest head dim the kernels take: the dK/dV kernel keeps four hd-vectors per thread in registers
 * (beyond 64 they spill, and lavapipe's compiler takes minutes); larger heads run the reference.
 */
export const MAX_HEAD_DIM = 64;

/**
 * Whether the kernels handle these shapes (else the caller runs the reference): q [B, H, T, hd] and
 * k, v [B, kvH, S, hd], or with `tokenMajor` q [B, T, H, hd] and k, v [B, S, kvH, hd].
 */
export function flashSupports(q: { shape: number[] }, k: { shape: number[] }, v: { shape: number[] }, tokenMajor = false): boolean {
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) return false;
  const { b, h, t, hd, kvH, s } = flashShapes(q, k, tokenMajor);
  const [kb, , , khd] = k.shape;
  if (kb !== b || khd !== hd || !tf.util.arraysEqual(k.shape, v.shape)) return false;
  if (h % kvH !== 0 || s < t || hd % 4 !== 0 || hd > MAX_HEAD_DIM || hd === 0) return false;
  return true;
}

/** Storage buffers the largest kernel binds (dQ and dK/dV with a keep-vector: 2 outputs, 7 inputs). */
const STORAGE_BUFFERS = 9;
const deviceOk = new WeakMap<object, boolean>();

/** Whether the active webgpu device has the limits the kernels need (else attention runs the reference). */
export function flashDeviceReady(): boolean {
  let device: GPUDevice;
  try {
    device = webgpuBackend().device;
  } catch {
    return false;
  }
  let ok = deviceOk.get(device);
  if (ok === undefined) {
    const l = device.limits;
    ok = l.maxStorageBuffersPerShaderStage >= STORAGE_BUFFERS && l.maxComputeWorkgroupStorageSize >= 16384 && l.maxComputeInvocationsPerWorkgroup >= WG;
    deviceOk.set(device, ok);
  }
  return ok;
}

export function flashShapes(q: { shape: number[] }, k: { shape: number[] }, tokenMajor = false): FlashShapes {
  const [b, h, t, hd] = tokenMajor ? [q.shape[0], q.shape[2], q.shape[1], q.shape[3]] : q.shape;
  const [kvH, s] = tokenMajor ? [k.shape[2], k.shape[1]] : [k.shape[1], k.shape[2]];
  return { b, h, kvH, t, s, hd };
}

function uniforms(sh: FlashShapes, causal: boolean, extra = 0): Uniform[] {
  const nRep = sh.h / sh.kvH;
  return [
    { type: 'uint32', data: [sh.t] },
    { type: 'uint32', data: [sh.s] },
    { type: 'uint32', data: [nRep * sh.t] },
    { type: 'uint32', data: [nRep] },
    { type: 'uint32', data: [sh.kvH] },
    { type: 'uint32', data: [sh.s - sh.t] },
    { type: 'uint32', data: [causal ? 1 : 0] },
    { type: 'uint32', data: [extra] },
    { type: 'uint32', data: [sh.b] },
  ];
}

const UNIFORM_STRUCT = 'struct U { T: u32, S: u32, R: u32, nRep: u32, kvH: u32, past: u32, causal: u32, extra: u32, B: u32 }';

/** The last key a tile of folded rows r0..r0+n−1 may see (+1): uniform over the workgroup. */
const KEY_END_FN = /* wgsl */ `
fn keyEnd(r0: u32, n: u32) -> u32 {
  if (u.causal == 0u) { return u.S; }
  let rLast = min(r0 + n, u.R) - 1u;
  var tMax = u.T - 1u;
  if (r0 / u.T == rLast / u.T) { tMax = rLast % u.T; }
  return min(u.S, u.past + tMax + 1u);
}`;

/**
 * Row offsets (in vec4s) of q-like [B, H, T, hd] and k-like [B, kvH, S, hd] tensors, or, token-major,
 * [B, T, H, hd] and [B, S, kvH, hd] (the projections' own layout: no head transposes).
 */
function layoutFns(tokenMajor: boolean): string {
  return tokenMajor
    ? `fn qIdx(b: u32, h: u32, t: u32) -> u32 { return ((b * u.T + t) * (u.kvH * u.nRep) + h) * D4; }
fn kIdx(b: u32, kvh: u32, j: u32) -> u32 { return ((b * u.S + j) * u.kvH + kvh) * D4; }`
    : `fn qIdx(b: u32, h: u32, t: u32) -> u32 { return ((b * u.kvH * u.nRep + h) * u.T + t) * D4; }
fn kIdx(b: u32, kvh: u32, j: u32) -> u32 { return ((b * u.kvH + kvh) * u.S + j) * D4; }`;
}

function bindings(names: [string, string][], keep: boolean, startAt = 0): string {
  const all = keep ? [...names, ['keep', 'array<f32>'] as [string, string]] : names;
  return all.map(([n, ty], i) => `@group(0) @binding(${startAt + i}) var<storage, read> ${n}: ${ty};`).join('\n');
}

/** Forward: out, lse ← q, k, v[, keep]; or with `split` > 1 the partial outputs of S-splits. */
function forwardKernel(hd: number, keep: boolean, split: boolean, tm: boolean): WgslKernel {
  const d4 = hd / 4;
  const bc = keyTile(hd);
  return {
    key: `flash-fwd:${hd}:${keep ? 'keep' : 'nokeep'}:${split ? 'split' : 'full'}:${tm ? 'bshd' : 'bhsd'}`,
    code: () => /* wgsl */ `
${UNIFORM_STRUCT}
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;
${split ? '@group(0) @binding(2) var<storage, read_write> msum: array<f32>;' : ''}
${bindings([['q', 'array<vec4<f32>>'], ['k', 'array<vec4<f32>>'], ['v', 'array<vec4<f32>>']], keep, split ? 3 : 2)}
@group(0) @binding(${(split ? 6 : 5) + (keep ? 1 : 0)}) var<uniform> u: U;
const D4 = ${d4}u;
const BC = ${bc}u;
const WG = ${WG}u;
var<workgroup> ks: array<vec4<f32>, ${bc * d4}>;
var<workgroup> vs: array<vec4<f32>, ${bc * d4}>;
${keep ? `var<workgroup> kk: array<f32, ${bc}>;` : ''}
${KEY_END_FN}
${layoutFns(tm)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.z;
  let bk = b * u.kvH + wid.y % u.kvH;
  ${split ? 'let part = wid.y / u.kvH; let nParts = u.extra;' : ''}
  let r0 = wid.x * WG;
  let r = r0 + li;
  let rr = min(r, u.R - 1u);
  let t = rr % u.T;
  let qpos = u.past + t;
  var kEnd = keyEnd(r0, WG);
  var kBeg = 0u;
  ${split ? `
  // this workgroup's share of the keys, in whole tiles
  let tiles = (kEnd + BC - 1u) / BC;
  let per = (tiles + nParts - 1u) / nParts;
  kBeg = min(kEnd, part * per * BC);
  kEnd = min(kEnd, (part + 1u) * per * BC);` : ''}
  var qr: array<vec4<f32>, D4>;
  var o: array<vec4<f32>, D4>;
  let kvh = wid.y % u.kvH;
  let qBase = qIdx(b, kvh * u.nRep + rr / u.T, t);
  for (var d = 0u; d < D4; d++) { qr[d] = q[qBase + d]; o[d] = vec4<f32>(0.0); }
  var m = -3.0e38;
  var l = 0.0;
  for (var kt = kBeg; kt < kEnd; kt += BC) {
    workgroupBarrier();
    let n = min(BC, u.S - kt) * D4;
    for (var i = li; i < BC * D4; i += WG) {
      if (i < n) {
        let ki = kIdx(b, kvh, kt + i / D4) + i % D4;
        ks[i] = k[ki];
        vs[i] = v[ki];
      } else {
        ks[i] = vec4<f32>(0.0);
        vs[i] = vec4<f32>(0.0);
      }
    }
    ${keep ? `for (var i = li; i < BC; i += WG) { kk[i] = select(0.0, keep[b * u.S + kt + i], kt + i < u.S); }` : ''}
    workgroupBarrier();
    var sc: array<f32, BC>;
    var mt = m;
    for (var jj = 0u; jj < BC; jj++) {
      let j = kt + jj;
      let ok = j < kEnd && (u.causal == 0u || j <= qpos)${keep ? ' && kk[jj] != 0.0' : ''};
      var s = -3.0e38;
      if (ok) {
        var acc = vec4<f32>(0.0);
        for (var d = 0u; d < D4; d++) { acc = fma(qr[d], ks[jj * D4 + d], acc); }
        s = (acc.x + acc.y) + (acc.z + acc.w);
        mt = max(mt, s);
      }
      sc[jj] = s;
    }
    if (mt > m) {
      let a = exp(m - mt);
      l = l * a;
      for (var d = 0u; d < D4; d++) { o[d] = o[d] * a; }
      m = mt;
    }
    for (var jj = 0u; jj < BC; jj++) {
      if (sc[jj] > -1.0e38) {
        let p = exp(sc[jj] - m);
        l = l + p;
        for (var d = 0u; d < D4; d++) { o[d] = fma(vec4<f32>(p), vs[jj * D4 + d], o[d]); }
      }
    }
  }
  if (r < u.R) {
    ${split ? `
    // partial: unnormalised output, row max and sum, [rows, parts]
    let pi = (bk * u.R + r) * nParts + part;
    for (var d = 0u; d < D4; d++) { out[pi * D4 + d] = o[d]; }
    lse[pi] = m;
    msum[pi] = l;` : `
    let H = u.kvH * u.nRep;
    let h = (bk % u.kvH) * u.nRep + rr / u.T;
    let oBase = ((b * u.T + t) * H + h) * D4;
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var d = 0u; d < D4; d++) { out[oBase + d] = o[d] * inv; }
    lse[(b * H + h) * u.T + t] = select(${BLIND}, m + log(l), l > 0.0);`}
  }
}`,
  };
}

/** Merges the S-split partials: out [B, T, H·hd], lse [B, H, T]. One thread per (row, vec4 column). */
function combineKernel(hd: number): WgslKernel {
  const d4 = hd / 4;
  return {
    key: `flash-combine:${hd}`,
    code: () => /* wgsl */ `
${UNIFORM_STRUCT}
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;
@group(0) @binding(2) var<storage, read> po: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> pm: array<f32>;
@group(0) @binding(4) var<storage, read> pl: array<f32>;
@group(0) @binding(5) var<uniform> u: U;
const D4 = ${d4}u;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  // rows over every (b, kvh): n = B·kvH·R
  let nParts = u.extra;
  let row = i / D4;
  let d = i % D4;
  let total = u.B * u.kvH * u.R;
  if (row >= total) { return; }
  var m = -3.0e38;
  for (var p = 0u; p < nParts; p++) { m = max(m, pm[row * nParts + p]); }
  var l = 0.0;
  var o = vec4<f32>(0.0);
  for (var p = 0u; p < nParts; p++) {
    let pi = row * nParts + p;
    let a = select(0.0, exp(pm[pi] - m), pl[pi] > 0.0);
    l = l + pl[pi] * a;
    o = fma(vec4<f32>(a), po[pi * D4 + d], o);
  }
  let bk = row / u.R;
  let r = row % u.R;
  let b = bk / u.kvH;
  let t = r % u.T;
  let H = u.kvH * u.nRep;
  let h = (bk % u.kvH) * u.nRep + r / u.T;
  out[((b * u.T + t) * H + h) * D4 + d] = o * select(0.0, 1.0 / l, l > 0.0);
  if (d == 0u) { lse[(b * H + h) * u.T + t] = select(${BLIND}, m + log(l), l > 0.0); }
}`,
  };
}

/** dQ and D = rowsum(dO∘O): one thread per folded row, over the key tiles it sees. */
function dqKernel(hd: number, keep: boolean, tm: boolean): WgslKernel {
  const d4 = hd / 4;
  const bc = keyTile(hd);
  return {
    key: `flash-dq:${hd}:${keep ? 'keep' : 'nokeep'}:${tm ? 'bshd' : 'bhsd'}`,
    code: () => /* wgsl */ `
${UNIFORM_STRUCT}
@group(0) @binding(0) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> delta: array<f32>;
${bindings([['q', 'array<vec4<f32>>'], ['k', 'array<vec4<f32>>'], ['v', 'array<vec4<f32>>'], ['o', 'array<vec4<f32>>'], ['dout', 'array<vec4<f32>>'], ['lse', 'array<f32>']], keep, 2)}
@group(0) @binding(${8 + (keep ? 1 : 0)}) var<uniform> u: U;
const D4 = ${d4}u;
const BC = ${bc}u;
const WG = ${WG}u;
var<workgroup> ks: array<vec4<f32>, ${bc * d4}>;
var<workgroup> vs: array<vec4<f32>, ${bc * d4}>;
${keep ? `var<workgroup> kk: array<f32, ${bc}>;` : ''}
${KEY_END_FN}
${layoutFns(tm)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.z;
  let bk = b * u.kvH + wid.y;
  let r0 = wid.x * WG;
  let r = r0 + li;
  let rr = min(r, u.R - 1u);
  let t = rr % u.T;
  let qpos = u.past + t;
  let kEnd = keyEnd(r0, WG);
  let H = u.kvH * u.nRep;
  let h = wid.y * u.nRep + rr / u.T;
  let oBase = ((b * u.T + t) * H + h) * D4;
  let li2 = (b * H + h) * u.T + t;
  let L = lse[li2];
  var qr: array<vec4<f32>, D4>;
  var dor: array<vec4<f32>, D4>;
  var acc: array<vec4<f32>, D4>;
  let kvh = wid.y;
  let qBase = qIdx(b, h, t);
  var dd = vec4<f32>(0.0);
  for (var d = 0u; d < D4; d++) {
    qr[d] = q[qBase + d];
    dor[d] = dout[oBase + d];
    dd = fma(dor[d], o[oBase + d], dd);
    acc[d] = vec4<f32>(0.0);
  }
  let D = (dd.x + dd.y) + (dd.z + dd.w);
  for (var kt = 0u; kt < kEnd; kt += BC) {
    workgroupBarrier();
    let n = min(BC, u.S - kt) * D4;
    for (var i = li; i < BC * D4; i += WG) {
      if (i < n) {
        let ki = kIdx(b, kvh, kt + i / D4) + i % D4;
        ks[i] = k[ki];
        vs[i] = v[ki];
      } else {
        ks[i] = vec4<f32>(0.0);
        vs[i] = vec4<f32>(0.0);
      }
    }
    ${keep ? `for (var i = li; i < BC; i += WG) { kk[i] = select(0.0, keep[b * u.S + kt + i], kt + i < u.S); }` : ''}
    workgroupBarrier();
    for (var jj = 0u; jj < BC; jj++) {
      let j = kt + jj;
      let ok = j < kEnd && (u.causal == 0u || j <= qpos)${keep ? ' && kk[jj] != 0.0' : ''};
      if (ok) {
        var sa = vec4<f32>(0.0);
        var pa = vec4<f32>(0.0);
        for (var d = 0u; d < D4; d++) {
          sa = fma(qr[d], ks[jj * D4 + d], sa);
          pa = fma(dor[d], vs[jj * D4 + d], pa);
        }
        let p = exp((sa.x + sa.y) + (sa.z + sa.w) - L);
        let ds = p * ((pa.x + pa.y) + (pa.z + pa.w) - D);
        for (var d = 0u; d < D4; d++) { acc[d] = fma(vec4<f32>(ds), ks[jj * D4 + d], acc[d]); }
      }
    }
  }
  if (r < u.R) {
    for (var d = 0u; d < D4; d++) { dq[qBase + d] = acc[d]; }
    delta[li2] = D;
  }
}`,
  };
}

/**
 * dK, dV: one thread per key over the folded rows [split·rowsPer, …) of its kv head; with several splits
 * the outputs are partials [B, kvH, splits, S, hd] summed afterwards.
 */
function dkvKernel(hd: number, keep: boolean, tm: boolean): WgslKernel {
  const d4 = hd / 4;
  return {
    key: `flash-dkv:${hd}:${keep ? 'keep' : 'nokeep'}:${tm ? 'bshd' : 'bhsd'}`,
    code: () => /* wgsl */ `
${UNIFORM_STRUCT}
@group(0) @binding(0) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dv: array<vec4<f32>>;
${bindings([['q', 'array<vec4<f32>>'], ['k', 'array<vec4<f32>>'], ['v', 'array<vec4<f32>>'], ['dout', 'array<vec4<f32>>'], ['lse', 'array<f32>'], ['delta', 'array<f32>']], keep, 2)}
@group(0) @binding(${8 + (keep ? 1 : 0)}) var<uniform> u: U;
const D4 = ${d4}u;
const BR = ${BR}u;
const WG = ${WG}u;
${layoutFns(tm)}
var<workgroup> qs: array<vec4<f32>, ${BR * d4}>;
var<workgroup> dos: array<vec4<f32>, ${BR * d4}>;
var<workgroup> ls: array<f32, ${BR}>;
var<workgroup> ds_: array<f32, ${BR}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.z;
  let kvh = wid.y % u.kvH;
  let split = wid.y / u.kvH;
  let nSplit = u.extra;
  let bk = b * u.kvH + kvh;
  let j0 = wid.x * WG;
  let j = j0 + li;
  let jj = min(j, u.S - 1u);
  var kvalid = j < u.S;
  ${keep ? 'kvalid = kvalid && keep[b * u.S + jj] != 0.0;' : ''}
  let H = u.kvH * u.nRep;
  let per = (u.R + nSplit - 1u) / nSplit;
  let rBeg = min(u.R, split * per);
  let rEnd = min(u.R, rBeg + per);
  var kr: array<vec4<f32>, D4>;
  var vr: array<vec4<f32>, D4>;
  var dka: array<vec4<f32>, D4>;
  var dva: array<vec4<f32>, D4>;
  let kBase = kIdx(b, kvh, jj);
  for (var d = 0u; d < D4; d++) {
    kr[d] = k[kBase + d];
    vr[d] = v[kBase + d];
    dka[d] = vec4<f32>(0.0);
    dva[d] = vec4<f32>(0.0);
  }
  for (var rt = rBeg; rt < rEnd; rt += BR) {
    // causal: skip a tile of rows whose last position is before this tile's first key (uniform)
    if (u.causal != 0u) {
      let rLast = min(rt + BR, rEnd) - 1u;
      var tMax = u.T - 1u;
      if (rt / u.T == rLast / u.T) { tMax = rLast % u.T; }
      if (u.past + tMax < j0) { continue; }
    }
    workgroupBarrier();
    for (var i = li; i < BR * D4; i += WG) {
      let row = rt + i / D4;
      let rc = min(row, u.R - 1u);
      let hh = kvh * u.nRep + rc / u.T;
      let tt = rc % u.T;
      let oi = ((b * u.T + tt) * H + hh) * D4 + i % D4;
      if (row < rEnd) {
        qs[i] = q[qIdx(b, hh, tt) + i % D4];
        dos[i] = dout[oi];
      } else {
        qs[i] = vec4<f32>(0.0);
        dos[i] = vec4<f32>(0.0);
      }
    }
    for (var i = li; i < BR; i += WG) {
      let row = rt + i;
      let rc = min(row, u.R - 1u);
      let li2 = (b * H + kvh * u.nRep + rc / u.T) * u.T + rc % u.T;
      ls[i] = select(${BLIND}, lse[li2], row < rEnd);
      ds_[i] = select(0.0, delta[li2], row < rEnd);
    }
    workgroupBarrier();
    for (var ii = 0u; ii < BR; ii++) {
      let row = rt + ii;
      let ok = kvalid && row < rEnd && (u.causal == 0u || jj <= u.past + row % u.T);
      if (ok) {
        var sa = vec4<f32>(0.0);
        var pa = vec4<f32>(0.0);
        for (var d = 0u; d < D4; d++) {
          sa = fma(qs[ii * D4 + d], kr[d], sa);
          pa = fma(dos[ii * D4 + d], vr[d], pa);
        }
        let p = exp((sa.x + sa.y) + (sa.z + sa.w) - ls[ii]);
        let dsv = p * ((pa.x + pa.y) + (pa.z + pa.w) - ds_[ii]);
        for (var d = 0u; d < D4; d++) {
          dva[d] = fma(vec4<f32>(p), dos[ii * D4 + d], dva[d]);
          dka[d] = fma(vec4<f32>(dsv), qs[ii * D4 + d], dka[d]);
        }
      }
    }
  }
  if (j < u.S) {
    // partials [splits, k's elements]: split 0 alone is k's layout
    let base = split * (u.B * u.S * u.kvH * D4) + kIdx(b, kvh, j);
    for (var d = 0u; d < D4; d++) { dk[base + d] = dka[d]; dv[base + d] = dva[d]; }
  }
}`,
  };
}

/** Query rows per tile in the paired dK/dV kernel. */
const BR2 = 8;

/**
 * dK, dV with two threads per key (adjacent lanes, one half of hd each: half the registers of
 * dkvKernel, twice the workgroups): per query tile each thread writes its partial q·k and dO·v to
 * workgroup memory, and after a barrier adds its partner's. For hd a multiple of 8.
 */
function dkvPairKernel(hd: number, keep: boolean, tm: boolean): WgslKernel {
  const d4 = hd / 4;
  const h4 = d4 / 2;
  return {
    key: `flash-dkv2:${hd}:${keep ? 'keep' : 'nokeep'}:${tm ? 'bshd' : 'bhsd'}`,
    code: () => /* wgsl */ `
${UNIFORM_STRUCT}
@group(0) @binding(0) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dv: array<vec4<f32>>;
${bindings([['q', 'array<vec4<f32>>'], ['k', 'array<vec4<f32>>'], ['v', 'array<vec4<f32>>'], ['dout', 'array<vec4<f32>>'], ['lse', 'array<f32>'], ['delta', 'array<f32>']], keep, 2)}
@group(0) @binding(${8 + (keep ? 1 : 0)}) var<uniform> u: U;
const D4 = ${d4}u;
const H4 = ${h4}u;
const BR = ${BR2}u;
const WG = ${WG}u;
const KT = ${WG / 2}u;
${layoutFns(tm)}
var<workgroup> qs: array<vec4<f32>, ${BR2 * d4}>;
var<workgroup> dos: array<vec4<f32>, ${BR2 * d4}>;
var<workgroup> ls: array<f32, ${BR2}>;
var<workgroup> ds_: array<f32, ${BR2}>;
var<workgroup> part: array<vec2<f32>, ${BR2 * WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.z;
  let kvh = wid.y % u.kvH;
  let split = wid.y / u.kvH;
  let nSplit = u.extra;
  let bk = b * u.kvH + kvh;
  let j0 = wid.x * KT;
  let j = j0 + li / 2u;
  let off = (li & 1u) * H4;
  let jj = min(j, u.S - 1u);
  var kvalid = j < u.S;
  ${keep ? 'kvalid = kvalid && keep[b * u.S + jj] != 0.0;' : ''}
  let H = u.kvH * u.nRep;
  let per = (u.R + nSplit - 1u) / nSplit;
  let rBeg = min(u.R, split * per);
  let rEnd = min(u.R, rBeg + per);
  var kr: array<vec4<f32>, H4>;
  var vr: array<vec4<f32>, H4>;
  var dka: array<vec4<f32>, H4>;
  var dva: array<vec4<f32>, H4>;
  let kBase = kIdx(b, kvh, jj) + off;
  for (var d = 0u; d < H4; d++) {
    kr[d] = k[kBase + d];
    vr[d] = v[kBase + d];
    dka[d] = vec4<f32>(0.0);
    dva[d] = vec4<f32>(0.0);
  }
  for (var rt = rBeg; rt < rEnd; rt += BR) {
    if (u.causal != 0u) {
      let rLast = min(rt + BR, rEnd) - 1u;
      var tMax = u.T - 1u;
      if (rt / u.T == rLast / u.T) { tMax = rLast % u.T; }
      if (u.past + tMax < j0) { continue; }
    }
    workgroupBarrier();
    for (var i = li; i < BR * D4; i += WG) {
      let row = rt + i / D4;
      let rc = min(row, u.R - 1u);
      let hh = kvh * u.nRep + rc / u.T;
      let tt = rc % u.T;
      if (row < rEnd) {
        qs[i] = q[qIdx(b, hh, tt) + i % D4];
        dos[i] = dout[((b * u.T + tt) * H + hh) * D4 + i % D4];
      } else {
        qs[i] = vec4<f32>(0.0);
        dos[i] = vec4<f32>(0.0);
      }
    }
    for (var i = li; i < BR; i += WG) {
      let row = rt + i;
      let rc = min(row, u.R - 1u);
      let li2 = (b * H + kvh * u.nRep + rc / u.T) * u.T + rc % u.T;
      ls[i] = select(${BLIND}, lse[li2], row < rEnd);
      ds_[i] = select(0.0, delta[li2], row < rEnd);
    }
    workgroupBarrier();
    for (var ii = 0u; ii < BR; ii++) {
      var sa = vec4<f32>(0.0);
      var pa = vec4<f32>(0.0);
      for (var d = 0u; d < H4; d++) {
        sa = fma(qs[ii * D4 + off + d], kr[d], sa);
        pa = fma(dos[ii * D4 + off + d], vr[d], pa);
      }
      part[ii * WG + li] = vec2<f32>((sa.x + sa.y) + (sa.z + sa.w), (pa.x + pa.y) + (pa.z + pa.w));
    }
    workgroupBarrier();
    for (var ii = 0u; ii < BR; ii++) {
      let row = rt + ii;
      let ok = kvalid && row < rEnd && (u.causal == 0u || jj <= u.past + row % u.T);
      if (ok) {
        // the lower half's partial first, whichever thread adds: both threads get the same sum
        let lo = part[ii * WG + (li & ~1u)];
        let hi = part[ii * WG + (li | 1u)];
        let p = exp((lo.x + hi.x) - ls[ii]);
        let dsv = p * ((lo.y + hi.y) - ds_[ii]);
        for (var d = 0u; d < H4; d++) {
          dva[d] = fma(vec4<f32>(p), dos[ii * D4 + off + d], dva[d]);
          dka[d] = fma(vec4<f32>(dsv), qs[ii * D4 + off + d], dka[d]);
        }
      }
    }
  }
  if (j < u.S) {
    let base = split * (u.B * u.S * u.kvH * D4) + kIdx(b, kvh, j) + off;
    for (var d = 0u; d < H4; d++) { dk[base + d] = dka[d]; dv[base + d] = dva[d]; }
  }
}`,
  };
}

function check(cond: boolean, msg: string): void {
  if (!cond) throw new PeftError('INVALID_ARGUMENT', `peftjs.Attention (webgpu): ${msg}`);
}

function checkInputs(q: tf.TensorInfo, k: tf.TensorInfo, v: tf.TensorInfo, keep: tf.TensorInfo | undefined, tm: boolean): FlashShapes {
  check(flashSupports(q, k, v, tm), `unsupported shapes q [${q.shape}], k [${k.shape}], v [${v.shape}] (${tm ? 'token' : 'head'}-major)`);
  check([q, k, v].every((x) => x.dtype === 'float32'), 'q, k, v must be float32');
  const sh = flashShapes(q, k, tm);
  if (keep) check(keep.dtype === 'float32' && tf.util.arraysEqual(keep.shape, [sh.b, sh.s]), `keep must be float32 [${sh.b}, ${sh.s}], got [${keep.shape}]`);
  return sh;
}

/** How many S-splits the decode forward uses (1: the plain kernel). */
export function decodeSplits(sh: FlashShapes): number {
  const rowTiles = Math.ceil((sh.h / sh.kvH) * sh.t / WG);
  const groups = rowTiles * sh.kvH * sh.b;
  const tiles = Math.ceil(sh.s / keyTile(sh.hd));
  if (groups >= 132 || tiles < 4) return 1;
  return Math.max(1, Math.min(tiles, Math.floor(264 / groups), 64));
}

/** Forward on the backend's data: [out [B, T, H·hd], lse [B, H, T]]. */
export function flashForward(
  backend: unknown,
  q: tf.TensorInfo,
  k: tf.TensorInfo,
  v: tf.TensorInfo,
  keep: tf.TensorInfo | undefined,
  causal: boolean,
  tokenMajor = false,
  splits?: number,
): tf.TensorInfo[] {
  const sh = checkInputs(q, k, v, keep, tokenMajor);
  const r = (sh.h / sh.kvH) * sh.t;
  const rowTiles = Math.ceil(r / WG);
  const ins = keep ? [q, k, v, keep] : [q, k, v];
  const nSplit = splits ?? decodeSplits(sh);
  if (nSplit <= 1) {
    return runWgsl(backend, forwardKernel(sh.hd, !!keep, false, tokenMajor), {
      inputs: ins,
      outputs: [{ shape: [sh.b, sh.t, sh.h * sh.hd], dtype: 'float32' }, { shape: [sh.b, sh.h, sh.t], dtype: 'float32' }],
      uniforms: uniforms(sh, causal),
      workgroups: [rowTiles, sh.kvH, sh.b],
      name: 'FlashAttention',
    });
  }
  const rows = sh.b * sh.kvH * r;
  const [po, pm, pl] = runWgsl(backend, forwardKernel(sh.hd, !!keep, true, tokenMajor), {
    inputs: ins,
    outputs: [{ shape: [rows * nSplit, sh.hd], dtype: 'float32' }, { shape: [rows * nSplit], dtype: 'float32' }, { shape: [rows * nSplit], dtype: 'float32' }],
    uniforms: uniforms(sh, causal, nSplit),
    workgroups: [rowTiles, sh.kvH * nSplit, sh.b],
    name: 'FlashDecode',
  });
  const outs = runWgsl(backend, combineKernel(sh.hd), {
    inputs: [po, pm, pl],
    outputs: [{ shape: [sh.b, sh.t, sh.h * sh.hd], dtype: 'float32' }, { shape: [sh.b, sh.h, sh.t], dtype: 'float32' }],
    uniforms: uniforms(sh, causal, nSplit),
    workgroups: [Math.ceil((rows * sh.hd) / 4 / 64), 1, 1],
    name: 'FlashDecodeCombine',
  });
  disposeInfos(backend, [po, pm, pl]);
  return outs;
}

function disposeInfos(backend: unknown, infos: tf.TensorInfo[]): void {
  const be = backend as { disposeData(id: object): void };
  for (const i of infos) be.disposeData(i.dataId);
}

let pairedDkv = true;
/** Chooses the dK/dV kernel with two threads a key (default, for hd % 8 = 0) or one; for tests and benchmarks. */
export function setPairedDkv(on: boolean): void {
  pairedDkv = on;
}

/** How many row-splits the dK/dV kernel uses: enough workgroups to fill the GPU. */
function rowSplits(sh: FlashShapes, keysPerGroup: number): number {
  const r = (sh.h / sh.kvH) * sh.t;
  const groups = Math.ceil(sh.s / keysPerGroup) * sh.kvH * sh.b;
  if (groups >= 264) return 1;
  return Math.max(1, Math.min(Math.ceil(264 / groups), Math.ceil(r / (4 * BR))));
}

/**
 * Backward: dq, dk, dv (shaped as q, k, v) as tensors, from dout [B, T, H·hd] and the
 * forward's out and lse. Call inside a tidy (temporaries are engine tensors).
 */
export function flashBackward(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  keep: tf.Tensor | undefined,
  out: tf.Tensor,
  lse: tf.Tensor,
  dout: tf.Tensor,
  causal: boolean,
  tokenMajor = false,
  splits?: number,
): { dq: tf.Tensor; dk: tf.Tensor; dv: tf.Tensor } {
  const sh = checkInputs(q, k, v, keep, tokenMajor);
  const backend = tf.backend();
  const r = (sh.h / sh.kvH) * sh.t;
  const kp = keep ? [keep] : [];
  const [dqI, deltaI] = runWgsl(backend, dqKernel(sh.hd, !!keep, tokenMajor), {
    inputs: [q, k, v, out, dout, lse, ...kp],
    outputs: [{ shape: q.shape, dtype: 'float32' }, { shape: [sh.b, sh.h, sh.t], dtype: 'float32' }],
    uniforms: uniforms(sh, causal),
    workgroups: [Math.ceil(r / WG), sh.kvH, sh.b],
    name: 'FlashAttentionDQ',
  });
  const dq = toTensor(dqI);
  const delta = toTensor(deltaI);
  const paired = sh.hd % 8 === 0 && pairedDkv;
  const keysPerGroup = paired ? WG / 2 : WG;
  const ns = splits ?? rowSplits(sh, keysPerGroup);
  const partShape = ns === 1 ? k.shape : [ns, sh.b * sh.kvH * sh.s * sh.hd];
  const [dkI, dvI] = runWgsl(backend, (paired ? dkvPairKernel : dkvKernel)(sh.hd, !!keep, tokenMajor), {
    inputs: [q, k, v, dout, lse, delta, ...kp],
    outputs: [{ shape: partShape, dtype: 'float32' }, { shape: partShape, dtype: 'float32' }],
    uniforms: uniforms(sh, causal, ns),
    workgroups: [Math.ceil(sh.s / keysPerGroup), sh.kvH * ns, sh.b],
    name: 'FlashAttentionDKV',
  });
  delta.dispose();
  let dk = toTensor(dkI);
  let dv = toTensor(dvI);
  if (ns > 1) {
    const pk = dk;
    const pv = dv;
    [dk, dv] = sumSplits(pk, pv, ns, k.shape);
    tf.dispose([pk, pv]);
  }
  return { dq, dk, dv };
}

/**
 * dK and dV from their row-split partials [ns, n] in one dispatch (both outputs; vec4 when n % 4 = 0):
 * tfjs's Sum over the leading axis costs a transpose and a reduction each, ≈ 0.25 ms at the SmolLM
 * shape, against a few µs of memory traffic here. Partials are added in split order, as tf.sum would.
 */
function sumSplits(pk: tf.Tensor, pv: tf.Tensor, ns: number, shape: number[]): [tf.Tensor, tf.Tensor] {
  const n = pk.size / ns;
  const vec4 = n % 4 === 0;
  const items = vec4 ? n / 4 : n;
  const t = vec4 ? 'vec4<f32>' : 'f32';
  const kernel = {
    key: `peftjs-flash-sumsplits-${vec4 ? 'v4' : 's'}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> dk: array<${t}>;
@group(0) @binding(1) var<storage, read_write> dv: array<${t}>;
@group(0) @binding(2) var<storage, read> pk: array<${t}>;
@group(0) @binding(3) var<storage, read> pv: array<${t}>;
struct U { n: u32, ns: u32 }
@group(0) @binding(4) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i >= u.n) { return; }
  var a = pk[i];
  var b = pv[i];
  for (var s = 1u; s < u.ns; s = s + 1u) { a = a + pk[s * u.n + i]; b = b + pv[s * u.n + i]; }
  dk[i] = a;
  dv[i] = b;
}`,
  };
  const [a, b] = runWgsl(tf.backend(), kernel, {
    inputs: [pk, pv],
    outputs: [{ shape, dtype: 'float32' }, { shape, dtype: 'float32' }],
    uniforms: [{ type: 'uint32', data: [items] }, { type: 'uint32', data: [ns] }],
    workgroups: dispatch1d(items, 256),
    name: 'FlashAttentionSumSplits',
  });
  return [toTensor(a), toTensor(b)];
}
