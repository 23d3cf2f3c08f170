import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, runWgsl, toTensor, type KVSlab, type WgslKernel } from '@peftjs/core';

/**
 * The KV cache of webgpu generation in preallocated buffers ("slabs", core's KVSlab): key/value
 * [B, kvH, capacity, hd], valid up to `length`, so a decode step appends in place instead of
 * concatenating each layer's past (two copies of the whole past per layer per token).
 *
 * - `slabCopy`: one dispatch copies rows 0..n-1 of a key and a value [B, kvH, srcCap, hd] into rows
 *   off..off+n-1 of a slab (a prompt's keys, a slab grown by doubling, one appended row);
 * - `slabDecodeAttention`: one dispatch per layer and token (T = 1) does attention of q [B, H, 1, hd]
 *   (pre-scaled) over the slab's positions plus the step's own key/value, and writes that key/value into
 *   the slab. A workgroup per (query head, batch row), its threads striding over the keys with an online
 *   softmax each, merged in workgroup memory. A key the keep-vector [B, L] masks is skipped; a query
 *   that sees no key outputs zeros (as the flash kernel).
 */

const WG = 32;
/** The largest head dim the decode kernel takes (workgroup memory WG·hd floats; registers 2·hd). */
export const SLAB_MAX_HEAD_DIM = 64;

function copyKernel(): WgslKernel {
  return {
    key: 'kv-slab-copy',
    code: () => /* wgsl */ `
struct U { n: u32, D4: u32, srcCap: u32, dstCap: u32, off: u32, total: u32 }
@group(0) @binding(0) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> sk: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> sv: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> u: U;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= u.total) { return; }
  let per = u.n * u.D4;
  let bk = i / per;
  let rem = i % per;
  let row = rem / u.D4;
  let d = rem % u.D4;
  let s = (bk * u.srcCap + row) * u.D4 + d;
  let t = (bk * u.dstCap + u.off + row) * u.D4 + d;
  dk[t] = sk[s];
  dv[t] = sv[s];
}`,
  };
}

function decodeKernel(hd: number, keep: boolean, rope: boolean): WgslKernel {
  const d4 = hd / 4;
  // bindings: out, kc, vc, q, kn, vn[, tab][, keep], u
  const tabAt = 6;
  const keepAt = rope ? 7 : 6;
  const uAt = 6 + (rope ? 1 : 0) + (keep ? 1 : 0);
  return {
    key: `kv-slab-decode:${hd}:${keep ? 'keep' : 'nokeep'}:${rope ? 'rope' : 'plain'}`,
    code: () => /* wgsl */ `
struct U { H: u32, kvH: u32, nRep: u32, cap: u32, L: u32, Bc: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> kc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> vc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> kn: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> vn: array<vec4<f32>>;
${rope ? `@group(0) @binding(${tabAt}) var<storage, read> tab: array<vec4<f32>>;` : ''}
${keep ? `@group(0) @binding(${keepAt}) var<storage, read> keep: array<f32>;` : ''}
@group(0) @binding(${uAt}) var<uniform> u: U;
const D4 = ${d4}u;
const HALF = ${Math.floor(d4 / 2)}u; // used by the RoPE variant only (hd % 8 = 0)
const WG = ${WG}u;
var<workgroup> ms: array<f32, ${WG}>;
var<workgroup> ls: array<f32, ${WG}>;
var<workgroup> po: array<vec4<f32>, ${WG * d4}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let h = wid.x;
  let b = wid.y;
  let kvh = h / u.nRep;
  let bk = b * u.kvH + kvh;
  let qb = (b * u.H + h) * D4;
  let nb = bk * D4;
  let last = u.L - 1u;
  var qr: array<vec4<f32>, D4>;
  var kr: array<vec4<f32>, D4>;
  var o: array<vec4<f32>, D4>;
  ${rope ? `
  // RoPE (x·cos + swap(x)·sinSigned) of q (pre-scaled tables) and of the step's key; tab [4, Bc, hd]:
  // cos, sinSigned, cos·scale, sinSigned·scale
  let tb = select(0u, b, u.Bc > 1u) * D4;
  let ts = u.Bc * D4;
  for (var d = 0u; d < D4; d++) {
    let p = (d + HALF) % D4;
    qr[d] = q[qb + d] * tab[2u * ts + tb + d] + q[qb + p] * tab[3u * ts + tb + d];
    kr[d] = kn[nb + d] * tab[tb + d] + kn[nb + p] * tab[ts + tb + d];
    o[d] = vec4<f32>(0.0);
  }` : `
  for (var d = 0u; d < D4; d++) { qr[d] = q[qb + d]; kr[d] = kn[nb + d]; o[d] = vec4<f32>(0.0); }`}
  var m = -3.0e38;
  var l = 0.0;
  for (var j = li; j < u.L; j += WG) {
    ${keep ? 'if (keep[b * u.L + j] == 0.0) { continue; }' : ''}
    let kb = (bk * u.cap + j) * D4;
    let isNew = j == last;
    var acc = vec4<f32>(0.0);
    for (var d = 0u; d < D4; d++) { acc = fma(qr[d], select(kc[kb + d], kr[d], isNew), acc); }
    let s = (acc.x + acc.y) + (acc.z + acc.w);
    if (s > m) {
      let a = exp(m - s);
      l = l * a;
      for (var d = 0u; d < D4; d++) { o[d] = o[d] * a; }
      m = s;
    }
    let p = exp(s - m);
    l = l + p;
    for (var d = 0u; d < D4; d++) { o[d] = fma(vec4<f32>(p), select(vc[kb + d], vn[nb + d], isNew), o[d]); }
  }
  ms[li] = m;
  workgroupBarrier();
  var mx = -3.0e38;
  for (var t = 0u; t < WG; t++) { mx = max(mx, ms[t]); }
  let a = select(0.0, exp(m - mx), l > 0.0);
  ls[li] = l * a;
  for (var d = 0u; d < D4; d++) { po[li * D4 + d] = o[d] * a; }
  workgroupBarrier();
  if (li < D4) {
    var lt = 0.0;
    var acc = vec4<f32>(0.0);
    for (var t = 0u; t < WG; t++) {
      lt = lt + ls[t];
      acc = acc + po[t * D4 + li];
    }
    out[qb + li] = acc * select(0.0, 1.0 / lt, lt > 0.0);
    // the first query head of each kv head stores the step's key/value (other workgroups read row
    // \`last\` from registers / vn, never from the slab: no race)
    if (h % u.nRep == 0u) {
      let t = (bk * u.cap + last) * D4 + li;
      kc[t] = kr[li];
      vc[t] = vn[nb + li];
    }
  }
}`,
  };
}

function dims(t: tf.TensorInfo, what: string): [number, number, number, number] {
  if (t.shape.length !== 4 || t.dtype !== 'float32' || t.shape[3] % 4 !== 0) {
    throw new PeftError('INVALID_ARGUMENT', `KV slab: ${what} must be float32 [B, kvHeads, positions, headDim] with headDim a multiple of 4, got ${t.dtype} [${t.shape}]`);
  }
  return t.shape as [number, number, number, number];
}

/** Whether a slab can hold keys shaped like k [B, kvH, T, hd] on the active backend. */
export function slabSupports(k: tf.Tensor): boolean {
  return tf.getBackend() === 'webgpu' && k.rank === 4 && k.dtype === 'float32' && (k.shape[3] as number) % 4 === 0;
}

/**
 * Copies rows 0..n-1 of key/value [B, kvH, ≥n, hd] into rows off..off+n-1 of `into` (or a new slab of
 * `capacity` rows when `into` is null): returns the slab's key and value (new tensors when new).
 */
export function slabCopy(key: tf.Tensor, value: tf.Tensor, n: number, into: KVSlab | null, capacity: number, off = 0): { key: tf.Tensor; value: tf.Tensor } {
  const [b, kvH, srcCap, hd] = dims(key, 'key');
  if (!tf.util.arraysEqual(key.shape, value.shape)) throw new PeftError('SHAPE_MISMATCH', `KV slab: key [${key.shape}] and value [${value.shape}] differ`);
  const cap = into ? into.capacity : capacity;
  if (n > srcCap || off + n > cap) throw new PeftError('INVALID_ARGUMENT', `KV slab: rows ${off}..${off + n - 1} do not fit (source ${srcCap} rows, slab ${cap})`);
  if (into && (into.key.shape[0] !== b || into.key.shape[1] !== kvH || into.key.shape[3] !== hd)) {
    throw new PeftError('SHAPE_MISMATCH', `KV slab: keys [${key.shape}] do not fit the slab [${into.key.shape}] (batch, kv heads and head dim must match)`);
  }
  const d4 = hd / 4;
  const total = b * kvH * n * d4;
  const shape = [b, kvH, cap, hd];
  const outs = runWgsl(undefined, copyKernel(), {
    inputs: [key, value],
    outputs: into ? [into.key, into.value] : [{ shape, dtype: 'float32' }, { shape, dtype: 'float32' }],
    uniforms: [{ type: 'uint32', data: [n] }, { type: 'uint32', data: [d4] }, { type: 'uint32', data: [srcCap] }, { type: 'uint32', data: [cap] }, { type: 'uint32', data: [off] }, { type: 'uint32', data: [total] }],
    workgroups: dispatch1d(total, 64),
    name: 'KVSlabCopy',
  });
  return into ? { key: into.key, value: into.value } : { key: toTensor(outs[0]), value: toTensor(outs[1]) };
}

/**
 * Attention of one query position q [B, H, 1, hd] (pre-scaled) over the slab's `slab.length` rows and
 * the step's key/value k, v [B, kvH, 1, hd] (position slab.length), which it writes into the slab (the
 * caller advances `length`). keep [B, slab.length + 1] (0/1) or null. With `rope` (hd a multiple of 8),
 * q and k are taken before RoPE and rotated here: rope [4, 1|B, hd] holds cos, sinSigned and both
 * pre-scaled for q (RopeTables' layout). Returns [B, 1, H·hd].
 */
export function slabDecodeAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, slab: KVSlab, keep: tf.Tensor | null, rope?: tf.Tensor): tf.Tensor {
  const [b, h, t, hd] = q.shape as number[];
  const [kb, kvH, kt, khd] = dims(k, 'key');
  const L = slab.length + 1;
  if (t !== 1 || kt !== 1 || kb !== b || khd !== hd || h % kvH !== 0 || !tf.util.arraysEqual(k.shape, v.shape) || hd > SLAB_MAX_HEAD_DIM) {
    throw new PeftError('INVALID_ARGUMENT', `KV slab decode: needs q [B, H, 1, hd ≤ ${SLAB_MAX_HEAD_DIM}] and k, v [B, kvH, 1, hd] with H a multiple of kvH; got q [${q.shape}], k [${k.shape}], v [${v.shape}]`);
  }
  if (L > slab.capacity) throw new PeftError('INVALID_ARGUMENT', `KV slab decode: the slab is full (${slab.capacity} positions)`);
  if (!tf.util.arraysEqual(slab.key.shape, [b, kvH, slab.capacity, hd])) {
    throw new PeftError('SHAPE_MISMATCH', `KV slab decode: the slab [${slab.key.shape}] does not fit k [${k.shape}]`);
  }
  if (keep && (keep.dtype !== 'float32' || !tf.util.arraysEqual(keep.shape, [b, L]))) {
    throw new PeftError('SHAPE_MISMATCH', `KV slab decode: keep must be float32 [${b}, ${L}], got ${keep.dtype} [${keep.shape}]`);
  }
  const bc = rope ? (rope.shape[1] as number) : 1;
  if (rope && (hd % 8 !== 0 || rope.dtype !== 'float32' || rope.rank !== 3 || rope.shape[0] !== 4 || (bc !== 1 && bc !== b) || rope.shape[2] !== hd)) {
    throw new PeftError('SHAPE_MISMATCH', `KV slab decode: the RoPE tables must be float32 [4, 1 or ${b}, ${hd}] (head dim a multiple of 8), got ${rope.dtype} [${rope.shape}]`);
  }
  const inputs = [q, k, v, ...(rope ? [rope] : []), ...(keep ? [keep] : [])];
  const [out] = runWgsl(undefined, decodeKernel(hd, !!keep, !!rope), {
    inputs,
    outputs: [{ shape: [b, 1, h * hd], dtype: 'float32' }, slab.key, slab.value],
    uniforms: [h, kvH, h / kvH, slab.capacity, L, bc].map((x) => ({ type: 'uint32' as const, data: [x] })),
    workgroups: [h, b, 1],
    name: 'KVSlabDecode',
  });
  return toTensor(out);
}
