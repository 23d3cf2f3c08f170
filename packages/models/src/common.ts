import * as tf from '@tensorflow/tfjs';
import { KVCache, Linear, PeftError, batchMatMulOp, defineOp, isRecordingGradients, nextSeed, registerFastPath, stopGradient, toIdsTensor, type ForwardInputs, type IdsLike, type KVSlab, type Module } from '@peftjs/core';
import type { Activation } from './config';
import { flashBackward, flashDeviceReady, flashForward, flashSupports } from './kernels/flash_attention';
import { SLAB_MAX_HEAD_DIM, slabCopy, slabDecodeAttention, slabSupports } from './kernels/kv_cache';
import { crossEntropyOp } from './ops';
import { notePositionBound } from './rope';

/**
 * The additive mask value. Finite (not -inf) so a row with every key masked (a left-padding query)
 * never produces NaN; such rows' attention output is then zeroed, as torch's SDPA (≥ 2.5) gives.
 */
export const MASK_MIN = -1e9;

/** Extra forward inputs the models here accept beyond core's ForwardInputs. */
export interface ModelForwardInputs extends ForwardInputs {
  /**
   * Compute logits for the last `logitsToKeep` positions only (HF's logits_to_keep); generate uses 1.
   * 0 or absent: every position.
   */
  logitsToKeep?: number;
}

/** Where parameters come from while a model is built: a loaded state dict, or a fresh init. */
export class ParamSource {
  private readonly temps: tf.Tensor[] = [];
  constructor(
    private readonly loaded: Record<string, tf.Tensor> | undefined,
    private readonly prefix = '',
    private readonly root?: ParamSource,
  ) {}

  scope(name: string): ParamSource {
    return new ParamSource(this.loaded, this.prefix ? `${this.prefix}.${name}` : name, this.root ?? this);
  }

  /**
   * The loaded tensor named `name` (under this scope) when it has the right shape — shared, not copied,
   * by the variable built from it — else `init()`. Shape and name errors are reported by loadStateDict.
   */
  get(name: string, shape: number[], init: () => tf.Tensor): tf.Tensor {
    const t = this.loaded?.[this.prefix ? `${this.prefix}.${name}` : name];
    if (t && tf.util.arraysEqual(t.shape, shape) && t.dtype === 'float32') return t;
    const fresh = init();
    (this.root ?? this).temps.push(fresh);
    return fresh;
  }

  /** Disposes the init tensors (the variables made from them hold their own reference). */
  release(): void {
    tf.dispose(this.temps);
    this.temps.length = 0;
  }
}

/** A Linear whose weight (and bias) come from `src`; PyTorch/HF init N(0, std), zero bias otherwise. */
export function makeLinear(src: ParamSource, name: string, inF: number, outF: number, bias: boolean, std: number): Linear {
  const s = src.scope(name);
  const weight = s.get('weight', [outF, inF], () => tf.randomNormal([outF, inF], 0, std, 'float32', nextSeed()));
  const biasValue = bias ? s.get('bias', [outF], () => tf.zeros([outF])) : undefined;
  return new Linear(inF, outF, { bias, weight, biasValue });
}

/** A Linear that uses another module's weight variable (tied embeddings): one parameter, listed once. */
export class TiedLinear extends Linear {
  constructor(weight: tf.Variable) {
    const [outF, inF] = weight.shape as [number, number];
    const placeholder = tf.zeros([1, 1]);
    super(inF, outF, { bias: false, weight: placeholder });
    placeholder.dispose();
    this._params.get('weight')!.dispose();
    this._params.set('weight', weight);
  }
}

/**
 * Runs a model constructor in an engine scope, so any temporary tensor made while building it is freed;
 * the variables built from them keep their data.
 */
export function constructScoped<T>(build: () => T): T {
  tf.engine().startScope();
  try {
    return build();
  } finally {
    tf.engine().endScope();
  }
}

/** Something with a forward over one tensor (a Linear, a norm, or a PEFT wrapper that replaced one). */
export interface Fwd {
  forward(x: tf.Tensor): tf.Tensor;
}

/** The child called `name`, looked up at call time so PEFT replacements take effect. */
export function sub(m: Module, name: string): Fwd {
  return m.child(name) as unknown as Fwd;
}

export function activate(kind: Activation, x: tf.Tensor): tf.Tensor {
  switch (kind) {
    case 'silu':
      return tf.mul(x, tf.sigmoid(x));
    case 'relu':
      return tf.relu(x);
    case 'gelu':
      // exact erf GELU (torch's default)
      return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
    case 'gelu_new': {
      // tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
      const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
      return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
    }
  }
}

/** Per-layer context a decoder layer gets from its model's forward. */
export interface AttentionContext {
  /** Additive mask [B|1, 1, T, S], or null when every query sees every key. */
  mask: tf.Tensor | null;
  /** [B, 1, T, 1]: 0 for a query that sees no key at all (left padding), or null when there is none. */
  rowKeep: tf.Tensor | null;
  /** Past keys/values to read (and, with `store`, to append to). */
  cache?: KVCache;
  store: boolean;
  training: boolean;
}

/**
 * Appends this step's k, v [B, kvH, T, hd] to the past of layer `layer`: stored in the cache in
 * generation (`store`), otherwise concatenated without touching the cache (a prefix stays intact and
 * gradients flow through it).
 *
 * On webgpu, outside gradient recording, the store keeps the layer in a preallocated slab (core's
 * KVSlab, kernels/kv_cache.ts): a prompt (T > 1) is copied in and attended as usual; a decode step
 * (T = 1) returns this step's k, v marked as pending, and attention() then runs the slab kernel, which
 * attends over the slab plus the step and writes the step into the slab (one dispatch per layer instead
 * of two concatenations and the flash kernel). Anything else reads the slab's rows back as tensors.
 */
export function withPast(ctx: AttentionContext, layer: number, k: tf.Tensor, v: tf.Tensor): { key: tf.Tensor; value: tf.Tensor } {
  const c = ctx.cache;
  if (!c) return { key: k, value: v };
  if (ctx.store && (c.slabs[layer] || (slabSupports(k) && !isRecordingGradients()))) return storeInSlab(c, layer, k, v);
  if (ctx.store) return c.update(layer, k, v, true);
  const slab = c.slabs[layer];
  const pk = slab ? slabRows(slab.key, slab.length) : c.keys[layer];
  const pv = slab ? slabRows(slab.value, slab.length) : c.values[layer];
  if (!pk || !pv) return { key: k, value: v };
  return { key: tf.concat([pk, k], 2), value: tf.concat([pv, v], 2) };
}

/** Rows 0..n-1 of a slab tensor [B, kvH, capacity, hd]. */
function slabRows(t: tf.Tensor, n: number): tf.Tensor {
  const [b, h, , d] = t.shape as number[];
  return tf.slice(t, [0, 0, 0, 0], [b, h, n, d]);
}

/** A decode step's k (and its v) waiting for attention() to run the slab kernel. */
const pendingDecode = new WeakMap<tf.Tensor, { slab: KVSlab; value: tf.Tensor }>();

/** The slab capacity for n positions: the cache's hint when it is enough, else doubling from 64. */
function slabCapacity(c: KVCache, n: number): number {
  if (c.capacityHint >= n) return c.capacityHint;
  let cap = 64;
  while (cap < n) cap *= 2;
  return cap;
}

function storeInSlab(c: KVCache, layer: number, k: tf.Tensor, v: tf.Tensor): { key: tf.Tensor; value: tf.Tensor } {
  let slab = c.slabs[layer];
  const t = k.shape[2] as number;
  if (slab && slab.length + t > slab.capacity) {
    const capacity = slabCapacity(c, Math.max(2 * slab.capacity, slab.length + t + 1));
    slab = { ...slabCopy(slab.key, slab.value, slab.length, null, capacity), length: slab.length, capacity };
    c.setSlab(layer, slab);
  }
  if (slab && t === 1 && !isRecordingGradients()) {
    pendingDecode.set(k, { slab, value: v });
    return { key: k, value: v };
  }
  // a prompt, a past handed in (e.g. prefix tuning's) or a step whose gradient is recorded: attended as
  // full tensors (the gradient flows into k, v), stored in the slab
  const past = slab ? { key: slabRows(slab.key, slab.length), value: slabRows(slab.value, slab.length) } : c.keys[layer] && c.values[layer] ? { key: c.keys[layer]!, value: c.values[layer]! } : null;
  const key = past ? tf.concat([past.key, k], 2) : k;
  const value = past ? tf.concat([past.value, v], 2) : v;
  if (slab) {
    slabCopy(k, v, t, slab, slab.capacity, slab.length);
    slab.length += t;
  } else {
    const n = key.shape[2] as number;
    const capacity = slabCapacity(c, n + 1);
    c.setSlab(layer, { ...slabCopy(key, value, n, null, capacity), length: n, capacity });
  }
  return { key, value };
}

/** The RoPE tables of a forward packed for the slab kernel ([4, 1|B, hd]), built once per forward. */
const packedRope = new WeakMap<tf.Tensor, tf.Tensor>();

/**
 * A decode step (T = 1) of a RoPE model on a KV slab (webgpu generation, see withPast) in one dispatch:
 * q [B, H, 1, hd] and k, v [B, kvH, 1, hd] as projected (before RoPE), `rope` the forward's tables
 * ([1|B, 1, 1, hd]: cos, sinSigned, and both pre-scaled for q); RoPE, attention over the slab and the
 * append happen in the slab kernel. Returns attention's output [B, 1, H·hd], or null where this does
 * not apply (no slab yet, a full one, T > 1, dropout, gradients recorded, hd not a multiple of 8 or
 * above SLAB_MAX_HEAD_DIM, a mask not from prepareInputs): the caller then applies RoPE and runs
 * withPast and attention().
 */
export function ropeDecodeAttention(
  ctx: AttentionContext,
  layer: number,
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  rope: { cos: tf.Tensor; sin: tf.Tensor; cosQ: tf.Tensor; sinQ: tf.Tensor },
  dropout?: unknown,
): tf.Tensor | null {
  const slab = ctx.store && !dropout ? ctx.cache?.slabs[layer] : undefined;
  if (!slab || q.shape[2] !== 1 || k.shape[2] !== 1 || slab.length + 1 > slab.capacity || !slabSupports(k) || isRecordingGradients()) return null;
  const hd = q.shape[3] as number;
  if (hd % 8 !== 0 || hd > SLAB_MAX_HEAD_DIM) return null;
  const src = ctx.mask ? maskSources.get(ctx.mask) : { keep: null, causal: true };
  const keep = src?.keep ?? null;
  if (!src || (keep && keep.shape[1] !== slab.length + 1)) return null;
  const b = q.shape[0] as number;
  const tables = [rope.cos, rope.sin, rope.cosQ, rope.sinQ];
  const bc = rope.cos.shape[0] as number;
  if (!tables.every((t) => t.rank === 4 && t.shape[0] === bc && (bc === 1 || bc === b) && t.shape[1] === 1 && t.shape[2] === 1 && t.shape[3] === hd)) return null;
  let packed = packedRope.get(rope.cosQ);
  if (!packed || packed.isDisposed) {
    packed = tf.concat(tables.map((t) => t.reshape([1, bc, hd])), 0);
    packedRope.set(rope.cosQ, packed);
  }
  const out = slabDecodeAttention(q, k, v, slab, keep, packed);
  slab.length++;
  return out;
}

/**
 * attention() for a pending decode step (see withPast): the slab kernel where it applies (no dropout,
 * a mask from prepareInputs or none, one query position, hd ≤ SLAB_MAX_HEAD_DIM), otherwise the step is
 * written into the slab and `fallback` runs on the slab's rows. Either way the slab grows by one.
 */
function pendingAttention(
  q: tf.Tensor,
  k: tf.Tensor,
  mask: tf.Tensor | null,
  dropout: ((p: tf.Tensor) => tf.Tensor) | undefined,
  fallback: (key: tf.Tensor, value: tf.Tensor) => tf.Tensor,
): tf.Tensor {
  const { slab, value: v } = pendingDecode.get(k)!;
  pendingDecode.delete(k);
  const src = mask ? maskSources.get(mask) : { keep: null, causal: true };
  const keep = src?.keep ?? null;
  const fused = !dropout && !!src && q.shape[2] === 1 && (q.shape[3] as number) <= SLAB_MAX_HEAD_DIM && (!keep || keep.shape[1] === slab.length + 1);
  if (fused) {
    const out = slabDecodeAttention(q, k, v, slab, keep);
    slab.length++;
    return out;
  }
  slabCopy(k, v, 1, slab, slab.capacity, slab.length);
  slab.length++;
  return fallback(slabRows(slab.key, slab.length), slabRows(slab.value, slab.length));
}

/** Backends whose matMul is much slower with transposed operands (tfjs's own matMul gradient uses them). */
const PLAIN_MATMUL_BACKENDS = new Set(['wasm', 'cpu']);
let customAttentionGrad: boolean | undefined;

/** Forces (true/false) or restores (undefined) the explicit-transpose attention gradient; for tests and benchmarks. */
export function setAttentionCustomGrad(on: boolean | undefined): void {
  customAttentionGrad = on;
}

/** A batched product through core's kernel registry (a plain 2-D product per batch entry on wasm/cpu). */
const bmm = (a: tf.Tensor, b: tf.Tensor) => batchMatMulOp({ a, b }, {});

/**
 * softmax(q·kᵀ + mask)·v on the folded layout q [B, kvH, R, hd], k/v [B, kvH, S, hd] (R = nRep·T),
 * with a gradient written with explicit transposes so that every matMul is the plain form
 * (on wasm/cpu the transposed forms tfjs's matMul gradient uses run 10-40× slower).
 */
function sdpaPlainGrad(qg: tf.Tensor, key: tf.Tensor, value: tf.Tensor, maskFn: (s: tf.Tensor) => tf.Tensor): tf.Tensor {
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [q, k, v, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const p = tf.softmax(maskFn(bmm(q, tf.transpose(k, [0, 1, 3, 2]))));
    save([q, k, v, p]);
    return {
      value: bmm(p, v),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [q0, k0, v0, p0] = saved;
        const dv = bmm(tf.transpose(p0, [0, 1, 3, 2]), dy);
        const dp = bmm(dy, tf.transpose(v0, [0, 1, 3, 2]));
        const ds = tf.mul(p0, tf.sub(dp, tf.sum(tf.mul(dp, p0), -1, true)));
        return [bmm(ds, k0), bmm(tf.transpose(ds, [0, 1, 3, 2]), q0), dv];
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return f(qg, key, value);
}

/**
 * Today's tfjs composition of scaled dot-product attention with grouped-query heads, keeping every
 * tensor at rank ≤ 4: q [B, H, T, hd] (already scaled), key/value [B, kvH, S, hd] → [B, T, H·hd].
 * Instead of repeat_kv (a copy of k/v per query group), the query heads that share a kv head are
 * folded into the row dimension: [B, kvH, nRep·T, hd] (head h uses kv head ⌊h / nRep⌋, as HF).
 */
function sdpaComposite(
  q: tf.Tensor,
  key: tf.Tensor,
  value: tf.Tensor,
  mask: tf.Tensor | null,
  dropout?: (p: tf.Tensor) => tf.Tensor,
  rowKeep?: tf.Tensor | null,
): tf.Tensor {
  const [b, h, t, d] = q.shape as number[];
  const kvH = key.shape[1] as number;
  const s = key.shape[2] as number;
  const nRep = h / kvH;
  const qg = nRep === 1 ? q : q.reshape([b, kvH, nRep * t, d]);
  // the mask is [B|1, 1, T, S]: add it on the per-head view (reshapes are free)
  const addMask = (sc: tf.Tensor) => (mask ? tf.add(sc.reshape([b, h, t, s]), mask).reshape(sc.shape) : sc);
  let out: tf.Tensor;
  if (!dropout && (customAttentionGrad ?? PLAIN_MATMUL_BACKENDS.has(tf.getBackend()))) {
    out = sdpaPlainGrad(qg, key, value, addMask);
  } else {
    let probs = tf.softmax(addMask(tf.matMul(qg, tf.transpose(key, [0, 1, 3, 2]))));
    if (dropout) probs = dropout(probs);
    out = tf.matMul(probs, value);
  }
  out = out.reshape([b, h, t, d]);
  // HF (torch SDPA ≥ 2.5) gives a query that sees no key a zero output; it matters for the loss at a
  // left-padding position whose label is the first real token
  if (rowKeep) out = tf.mul(out, rowKeep);
  return tf.transpose(out, [0, 2, 1, 3]).reshape([b, t, h * d]);
}

/**
 * The 0/1 mask [B|1, 1, T, S] of a forward: query i (at position S − T + i) sees keys ≤ S − T + i when
 * `causal`, combined with the key-padding keep-vector [B, S]; null when every query sees every key.
 */
function visibility(batch: number, seqLen: number, total: number, keep: tf.Tensor | null, causal: boolean): tf.Tensor | null {
  const past = total - seqLen;
  if (causal && seqLen > 1) {
    // built here, not by a compare kernel
    const vals = new Float32Array(seqLen * total);
    for (let i = 0; i < seqLen; i++) vals.fill(1, i * total, i * total + past + i + 1);
    const c = tf.tensor4d(vals, [1, 1, seqLen, total]);
    return keep ? tf.mul(c, keep.reshape([batch, 1, 1, total])) : c;
  }
  return keep ? keep.reshape([batch, 1, 1, total]) : null;
}

type AttentionInputs = { q: tf.Tensor; k: tf.Tensor; v: tf.Tensor; keep?: tf.Tensor };

/**
 * `peftjs.Attention`: causal grouped-query attention softmax(q·kᵀ + mask)·v → [B, T, H·hd], for
 * q [B, H, T, hd] (pre-scaled), k/v [B, kvH, S, hd], an optional key keep-vector [B, S] (0/1) and
 * `causal` (queries at positions S − T..S − 1); with `tokenMajor` q is [B, T, H, hd] and k/v [B, S, kvH, hd]
 * (the projections' layout). A query that sees no key outputs zeros. The reference is
 * the tfjs composition above (with the additive MASK_MIN mask); the webgpu fast path is flash attention
 * (kernels/flash_attention.ts), which also returns the per-row logsumexp, saved for its backward.
 */
export const attentionOp = defineOp<AttentionInputs, { causal: boolean; tokenMajor?: boolean }>({
  name: 'peftjs.Attention',
  inputNames: ['q', 'k', 'v', 'keep'],
  outputsToSave: [true, true],
  reference: ({ q, k, v, keep }, { causal, tokenMajor }) => {
    if (tokenMajor) {
      // [B, T, heads, hd] → [B, heads, T, hd]
      q = tf.transpose(q, [0, 2, 1, 3]);
      k = tf.transpose(k, [0, 2, 1, 3]);
      v = tf.transpose(v, [0, 2, 1, 3]);
    }
    const [b, , t] = q.shape as number[];
    const s = k.shape[2] as number;
    // the keep-vector is a 0/1 mask: no gradient flows into it
    const vis = visibility(b, t, s, keep ? stopGradient(keep) : null, causal);
    const rowKeep = keep && vis ? tf.max(vis, -1, true) : null;
    const mask = vis ? tf.mul(tf.sub(1, vis), MASK_MIN) : null;
    return sdpaComposite(q, k, v, mask, undefined, rowKeep);
  },
  describe: 'q [B, H, T, hd], k / v [B, kvH, S, hd], keep [B, S]',
});

registerFastPath(attentionOp, {
  backendName: 'webgpu',
  kernelFunc: ({ inputs, attrs, backend }) => {
    const { q, k, v, keep } = inputs as unknown as Record<string, tf.TensorInfo | undefined>;
    return flashForward(backend, q!, k!, v!, keep, attrs.causal, !!attrs.tokenMajor);
  },
  gradient: (dy, { q, k, v, keep }, { causal, tokenMajor }, outputs) => {
    const { dq, dk, dv } = flashBackward(q, k, v, keep, outputs[0]!, outputs[1]!, dy, causal, !!tokenMajor);
    return { q: dq, k: dk, v: dv, ...(keep ? { keep: () => tf.zerosLike(keep) } : {}) };
  },
  tags: ['attention'],
});

/** What prepareInputs built a mask from, so attention can hand the flash kernel the keep-vector instead. */
const maskSources = new WeakMap<tf.Tensor, { keep: tf.Tensor | null; causal: boolean }>();

/**
 * Scaled dot-product attention with grouped-query heads: q [B, H, T, hd] (already scaled),
 * key/value [B, kvH, S, hd] → [B, T, H·hd]. Where the backend has a `peftjs.Attention` fast path
 * (webgpu: flash attention), a mask built by prepareInputs and no attention dropout, it runs that op;
 * otherwise (wasm, cpu: always) the tfjs composition.
 */
export function attention(
  q: tf.Tensor,
  key: tf.Tensor,
  value: tf.Tensor,
  mask: tf.Tensor | null,
  dropout?: (p: tf.Tensor) => tf.Tensor,
  rowKeep?: tf.Tensor | null,
): tf.Tensor {
  // a decode step held in a KV slab (withPast, webgpu generation)
  if (pendingDecode.has(key)) return pendingAttention(q, key, mask, dropout, (k, v) => attention(q, k, v, mask, dropout, rowKeep));
  if (!dropout && attentionOp.fastPathBackends().includes(tf.getBackend()) && flashSupports(q, key, value) && flashDeviceReady()) {
    const src = mask ? maskSources.get(mask) : { keep: null, causal: false };
    if (src) return attentionOp({ q, k: key, v: value, keep: src.keep ?? undefined }, { causal: src.causal });
  }
  return sdpaComposite(q, key, value, mask, dropout, rowKeep);
}

/**
 * Where attention with this mask runs the flash kernel on q [B, T, H, hd], k/v [B, S, kvH, hd] read in
 * the projections' token-major layout (webgpu, no attention dropout, a mask from prepareInputs or none):
 * the caller then skips splitHeads' transposes and calls attentionTokenMajor.
 */
export function tokenMajorAttention(mask: tf.Tensor | null, heads: number, kvHeads: number, headDim: number, dropout?: unknown): boolean {
  if (dropout || !attentionOp.fastPathBackends().includes(tf.getBackend()) || !flashDeviceReady()) return false;
  if (mask && !maskSources.has(mask)) return false;
  const q = { shape: [1, 1, heads, headDim] };
  const k = { shape: [1, 1, kvHeads, headDim] };
  return flashSupports(q, k, k, true);
}

/** attention() on token-major q [B, T, H, hd] and k/v [B, S, kvH, hd] (see tokenMajorAttention) → [B, T, H·hd]. */
export function attentionTokenMajor(q: tf.Tensor, key: tf.Tensor, value: tf.Tensor, mask: tf.Tensor | null): tf.Tensor {
  const src = mask ? maskSources.get(mask) : { keep: null, causal: false };
  if (!src) throw new PeftError('INVALID_ARGUMENT', 'attentionTokenMajor: the mask was not built by prepareInputs');
  return attentionOp({ q, k: key, v: value, keep: src.keep ?? undefined }, { causal: src.causal, tokenMajor: true });
}

/** [B, T, H·hd] → [B, H, T, hd] (one position: a reshape, the same element order). */
export function splitHeads(x: tf.Tensor, heads: number, headDim: number): tf.Tensor {
  const [b, t] = x.shape as number[];
  if (t === 1) return x.reshape([b, heads, 1, headDim]);
  return tf.transpose(x.reshape([b, t, heads, headDim]), [0, 2, 1, 3]);
}

/** True when a number[][] mask keeps every position. */
function allOnes(m: number[][]): boolean {
  for (const row of m) for (const v of row) if (v !== 1) return false;
  return true;
}

/**
 * For a plain-array positionIds of the forward's shape ([B or 1, T]): 'default' when every row is
 * past + 0..T-1, else the exclusive bound of its ids when they are all non-negative integers; else undefined.
 */
function arrayPositions(ids: number[][], past: number, batch: number, seqLen: number): 'default' | number | undefined {
  if ((ids.length !== batch && ids.length !== 1) || ids[0]?.length !== seqLen) return undefined;
  let isDefault = true;
  let max = -1;
  const t = ids[0]?.length ?? 0;
  for (const row of ids) {
    if (!Array.isArray(row) || row.length !== t) return undefined;
    for (let i = 0; i < row.length; i++) {
      const v = row[i];
      if (!Number.isInteger(v) || v < 0) return undefined;
      if (v !== past + i) isDefault = false;
      if (v > max) max = v;
    }
  }
  return isDefault ? 'default' : max + 1;
}

/** Mask elements (B·T·S) up to which a plain-array mask is built in JS on webgpu. */
const JS_MASK_LIMIT = 1 << 16;

/**
 * prepareInputs' keep-vector, additive mask and row-keep built in JS from a plain-array mask (webgpu,
 * small masks: a decode step's): the same values as the tensor composition (0/1 keep as int32 then
 * float, −0 for a visible key and MASK_MIN for a hidden one, 1/0 row-keep), as three uploads and no
 * kernels, where the composition runs five to seven small kernels a forward.
 */
function masksFromArray(m: number[][], batch: number, seqLen: number, past: number, currentOnly: boolean): { mask: tf.Tensor; rowKeep: tf.Tensor | null } {
  const total = past + seqLen;
  const keepVals = new Float32Array(batch * total);
  for (let b = 0; b < batch; b++) {
    const row = Int32Array.from(m[b]);
    const base = b * total;
    if (currentOnly) {
      keepVals.fill(1, base, base + past);
      keepVals.set(row, base + past);
    } else {
      keepVals.set(row, base);
    }
  }
  const maskVals = new Float32Array(batch * seqLen * total);
  const rowVals = new Float32Array(batch * seqLen);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < seqLen; i++) {
      const o = (b * seqLen + i) * total;
      // causal: query i (at past + i) sees keys ≤ past + i; a decode step (T = 1) sees every key
      const seen = seqLen > 1 ? past + i + 1 : total;
      let any = 0;
      for (let j = 0; j < total; j++) {
        const vis = j < seen ? keepVals[b * total + j] : 0;
        maskVals[o + j] = (1 - vis) * MASK_MIN;
        if (vis > any) any = vis;
      }
      rowVals[b * seqLen + i] = any;
    }
  }
  const keep = tf.tensor2d(keepVals, [batch, total]);
  const mask = tf.tensor4d(maskVals, [batch, 1, seqLen, total]);
  maskSources.set(mask, { keep, causal: true });
  // as the composition: a row-keep only where a query may see no key (never with a current-only mask)
  const maybeBlind = !currentOnly && m.some((r) => r.slice(0, past + 1).every((v) => v === 0));
  return { mask, rowKeep: maybeBlind ? tf.tensor4d(rowVals, [batch, 1, seqLen, 1]) : null };
}

/** The inputs of a forward, converted and checked once for every layer. */
export interface Prepared {
  batch: number;
  seqLen: number;
  pastLength: number;
  /** int32 ids [B, T], when given. */
  ids?: tf.Tensor;
  embeds?: tf.Tensor;
  /** Explicit position ids [B|1, T] (int32), or null for pastLength + 0..T-1. */
  positionIds: tf.Tensor | null;
  mask: tf.Tensor | null;
  rowKeep: tf.Tensor | null;
  cache?: KVCache;
  store: boolean;
}

/**
 * Converts a forward's inputs (call inside tf.tidy). The mask is built once: causal (query i sees keys
 * ≤ past + i) combined with the padding mask, additive, [B|1, 1, T, past + T].
 */
export function prepareInputs(
  inputs: ForwardInputs,
  opts: { hiddenSize: number; vocabSize?: number; maxPositions?: number; slidingWindow?: number | null; what: string },
): Prepared {
  const { inputIds, inputsEmbeds, attentionMask, positionIds, pastKeyValues, useCache } = inputs;
  let ids: tf.Tensor | undefined;
  let embeds: tf.Tensor | undefined;
  if (inputsEmbeds) {
    if (inputsEmbeds.rank !== 3 || inputsEmbeds.shape[2] !== opts.hiddenSize) {
      throw new PeftError('INVALID_ARGUMENT', `${opts.what}: inputsEmbeds must be [batch, seq, ${opts.hiddenSize}], got [${inputsEmbeds.shape}]`);
    }
    embeds = inputsEmbeds.dtype === 'float32' ? inputsEmbeds : inputsEmbeds.toFloat();
  }
  if (inputIds !== undefined) {
    // ids out of range would read garbage (tfjs gathers do not check); plain arrays are checked here
    if (Array.isArray(inputIds) && opts.vocabSize !== undefined) {
      for (const row of inputIds) {
        for (const id of Array.isArray(row) ? row : []) {
          if (!Number.isInteger(id) || id < 0 || id >= opts.vocabSize) {
            throw new PeftError('INVALID_ARGUMENT', `${opts.what}: token id ${id} in inputIds is outside the vocabulary (vocab_size ${opts.vocabSize})`);
          }
        }
      }
    }
    ids = toIdsTensor(inputIds, 'inputIds');
    if (ids.rank !== 2) throw new PeftError('INVALID_ARGUMENT', `${opts.what}: inputIds must be [batch, seq], got [${ids.shape}]`);
  }
  if (!ids && !embeds) throw new PeftError('INVALID_ARGUMENT', `${opts.what}: forward needs inputIds or inputsEmbeds`);
  const [batch, seqLen] = (embeds ?? ids)!.shape as number[];
  if (seqLen === 0) throw new PeftError('INVALID_ARGUMENT', `${opts.what}: the input has no positions`);

  let cache = pastKeyValues;
  const store = !!useCache;
  if (store && !cache) cache = new KVCache();
  const pastLength = cache?.length ?? 0;
  const total = pastLength + seqLen;
  if (opts.maxPositions !== undefined && total > opts.maxPositions) {
    throw new PeftError('INVALID_ARGUMENT', `${opts.what}: ${total} positions exceed the config's n_positions (${opts.maxPositions}), the size of the position embeddings`);
  }
  if (opts.slidingWindow && total > opts.slidingWindow) {
    throw new PeftError(
      'UNSUPPORTED',
      `${opts.what}: ${total} positions exceed the config's sliding_window (${opts.slidingWindow}); sliding-window attention is not implemented, use sequences of at most ${opts.slidingWindow} positions`,
    );
  }

  let pos: tf.Tensor | null = null;
  // webgpu: position ids given as a plain array that are the default (past + 0..T-1 in every row) need
  // no tensor (no upload per decode step); other non-negative ones let RoPE gather its table rows
  const bound = positionIds !== undefined && tf.getBackend() === 'webgpu' && Array.isArray(positionIds) ? arrayPositions(positionIds, pastLength, batch, seqLen) : undefined;
  if (positionIds !== undefined && bound !== 'default') {
    pos = toIdsTensor(positionIds, 'positionIds');
    if (pos.rank !== 2 || (pos.shape[0] !== batch && pos.shape[0] !== 1) || pos.shape[1] !== seqLen) {
      throw new PeftError('INVALID_ARGUMENT', `${opts.what}: positionIds must be [${batch}, ${seqLen}], got [${pos.shape}]`);
    }
    if (typeof bound === 'number') notePositionBound(pos, bound);
  }

  let keep: tf.Tensor | null = null; // [B, S] float 1/0
  let maybeBlind = false; // some query may see no key at all
  if (attentionMask !== undefined) {
    const shape = attentionMask instanceof tf.Tensor ? attentionMask.shape : [attentionMask.length, attentionMask[0]?.length ?? 0];
    // A mask of the current positions only, with a past (e.g. a prefix): the past stays visible.
    const currentOnly = pastLength > 0 && shape[1] === seqLen;
    const ragged = Array.isArray(attentionMask) && attentionMask.some((r) => !Array.isArray(r) || r.length !== shape[1]);
    if (ragged || shape.length !== 2 || shape[0] !== batch || (shape[1] !== total && !currentOnly)) {
      throw new PeftError('INVALID_ARGUMENT', `${opts.what}: attentionMask must be [${batch}, ${total}] (past ${pastLength} + ${seqLen} positions), got [${shape}]`);
    }
    // an all-ones mask (checked only when it is a plain array: no read-back) is no mask
    if (Array.isArray(attentionMask) && !allOnes(attentionMask) && tf.getBackend() === 'webgpu' && batch * seqLen * total <= JS_MASK_LIMIT) {
      return { batch, seqLen, pastLength, ids, embeds, positionIds: pos, ...masksFromArray(attentionMask, batch, seqLen, pastLength, currentOnly), cache, store };
    }
    if (!(Array.isArray(attentionMask) && allOnes(attentionMask))) {
      let m = toIdsTensor(attentionMask, 'attentionMask');
      if (currentOnly) m = tf.concat([tf.ones([batch, pastLength], 'int32'), m], 1);
      keep = m.toFloat();
      // a query sees no key only when the past and its own position are all masked (left padding);
      // a plain-array mask tells without a read-back whether any row is like that
      maybeBlind = !currentOnly && (!Array.isArray(attentionMask) || attentionMask.some((r) => r.slice(0, pastLength + 1).every((v) => v === 0)));
    }
  }

  let mask = visibility(batch, seqLen, total, keep, true);
  const rowKeep = maybeBlind && mask ? tf.max(mask, -1, true) : null;
  // 1 → 0, 0 → MASK_MIN
  if (mask) {
    mask = tf.mul(tf.sub(1, mask), MASK_MIN);
    maskSources.set(mask, { keep, causal: true });
  }
  return { batch, seqLen, pastLength, ids, embeds, positionIds: pos, mask, rowKeep, cache, store };
}

/**
 * HF's ForCausalLMLoss: logits [B, T, V] predict labels shifted left by one; positions whose label is
 * -100 are ignored; the mean over the rest (NaN when none is left, as torch).
 */
export function causalLMLoss(logits: tf.Tensor, labels: IdsLike, what: string): tf.Scalar {
  const lab = toIdsTensor(labels, 'labels');
  const [b, t, v] = logits.shape as number[];
  if (lab.rank !== 2 || lab.shape[0] !== b || lab.shape[1] !== t) {
    throw new PeftError('INVALID_ARGUMENT', `${what}: labels must be [${b}, ${t}] like the logits' positions, got [${lab.shape}]`);
  }
  const shifted = t > 1 ? tf.concat([tf.slice(lab, [0, 1], [b, t - 1]), tf.fill([b, 1], -100, 'int32')], 1) : tf.fill([b, 1], -100, 'int32');
  return tokenCrossEntropy(logits.reshape([b * t, v]), shifted.reshape([b * t]));
}

/**
 * Mean cross-entropy of logits [N, C] against int labels [N], ignoring -100: peftjs.CrossEntropy, whose
 * reference is the former composition here (wasm/cpu run it unchanged); webgpu runs a chunked WGSL
 * kernel that never holds a [N, C] log-softmax.
 */
export function tokenCrossEntropy(logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  // the fast path takes int32 labels (the reference takes any dtype as it always has)
  const fast = crossEntropyOp.fastPathBackends().includes(tf.getBackend());
  const lab = fast && labels.dtype !== 'int32' ? tf.cast(labels, 'int32') : labels;
  return crossEntropyOp({ logits, labels: lab }, {}) as tf.Scalar;
}
