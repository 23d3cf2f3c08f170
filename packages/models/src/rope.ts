import * as tf from '@tensorflow/tfjs';
import { defineOp, hostBackend, registerFastPath, wasmHeapBackend } from '@peftjs/core';
import type { RopeSpec } from './config';
import { ropeWebgpu } from './kernels/rope_wgsl';

/**
 * HF's inverse frequencies, rounded to float32 at each step as torch computes them in fp32, so the
 * rotation angles match the reference even at long positions.
 */
export function ropeInvFreq(spec: RopeSpec, headDim: number): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const e = Math.fround((2 * i) / headDim);
    inv[i] = Math.fround(1 / Math.fround(Math.pow(spec.theta, e)));
  }
  if (spec.type === 'linear') for (let i = 0; i < half; i++) inv[i] = Math.fround(inv[i] / spec.factor);
  if (spec.type === 'llama3') {
    // transformers' _compute_llama3_parameters: long wavelengths scaled by 1/factor, short kept, smooth between.
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: old } = spec;
    const lowWave = old / lowFreqFactor;
    const highWave = old / highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i];
      const wave = (2 * Math.PI) / f;
      let g = wave > lowWave ? f / factor : f;
      if (!(wave < highWave) && !(wave > lowWave)) {
        const smooth = (old / wave - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        g = (1 - smooth) * (g / factor) + smooth * g;
      }
      inv[i] = Math.fround(g);
    }
  }
  return inv;
}

/** Exclusive upper bounds of int32 position-id tensors whose ids are known (without a read-back) to be ≥ 0. */
const idBounds = new WeakMap<tf.Tensor, number>();

/**
 * Notes that every id of `positionIds` lies in 0..bound-1 (prepareInputs knows it from a plain array), so
 * that RopeTables.fromIds may gather rows of its tables on webgpu rather than compute cos and sin.
 */
export function notePositionBound(positionIds: tf.Tensor, bound: number): void {
  idBounds.set(positionIds, bound);
}

/**
 * cos and signed-sin tables for positions 0..n-1, [n, headDim], kept across forwards (built once,
 * grown by doubling when a longer position is asked for). With sinSigned = cat(-sin, sin),
 * HF's `x·cos + rotate_half(x)·sin` is `x·cos + cat(x2, x1)·sinSigned`: no negation per layer.
 */
export class RopeTables {
  private cos!: tf.Tensor2D;
  private sinSigned!: tf.Tensor2D;
  private size = 0;
  private readonly invFreq: tf.Tensor2D;

  constructor(
    spec: RopeSpec,
    readonly headDim: number,
    initialSize: number,
  ) {
    this.invFreq = tf.keep(tf.tensor2d(ropeInvFreq(spec, headDim), [1, headDim / 2]));
    this.build(Math.max(1, initialSize));
  }

  private build(n: number): void {
    const [cos, sin] = tf.tidy(() => {
      // freqs = pos · inv_freq in fp32 (one rounding, as torch's matmul with inner dim 1)
      const freqs = tf.mul(tf.range(0, n, 1, 'float32').reshape([n, 1]), this.invFreq);
      const c = tf.cos(freqs);
      const s = tf.sin(freqs);
      return [tf.concat([c, c], 1), tf.concat([tf.neg(s), s], 1)] as tf.Tensor2D[];
    });
    // kept: the tables outlive any scope the model is built or run in
    tf.keep(cos);
    tf.keep(sin);
    if (this.size) tf.dispose([this.cos, this.sinSigned]);
    this.cos = cos;
    this.sinSigned = sin;
    this.size = n;
  }

  private ensure(n: number): void {
    if (n <= this.size) return;
    let m = this.size;
    while (m < n) m *= 2;
    this.build(m);
  }

  /**
   * cos, sinSigned for positions start..start+t-1, shaped [1, 1, t, headDim] (broadcast over batch
   * and heads of [B, H, T, headDim]). Call inside a tidy.
   */
  range(start: number, t: number): { cos: tf.Tensor; sin: tf.Tensor } {
    this.ensure(start + t);
    const d = this.headDim;
    return {
      cos: tf.slice(this.cos, [start, 0], [t, d]).reshape([1, 1, t, d]),
      sin: tf.slice(this.sinSigned, [start, 0], [t, d]).reshape([1, 1, t, d]),
    };
  }

  /**
   * cos, sinSigned for explicit position ids [B, T], shaped [B, 1, T, headDim]. Computed from the ids
   * (same fp32 product as the table) so no id has to be read back to size the table.
   */
  fromIds(positionIds: tf.Tensor): { cos: tf.Tensor; sin: tf.Tensor } {
    const [b, t] = positionIds.shape as [number, number];
    const bound = idBounds.get(positionIds);
    if (bound !== undefined && tf.getBackend() === 'webgpu') {
      // ids known to lie in 0..bound-1 (prepareInputs): two gathers of table rows instead of seven ops
      this.ensure(bound);
      const flat = positionIds.reshape([b * t]);
      const d = this.headDim;
      return { cos: tf.gather(this.cos, flat).reshape([b, 1, t, d]), sin: tf.gather(this.sinSigned, flat).reshape([b, 1, t, d]) };
    }
    const freqs = tf.mul(positionIds.toFloat().reshape([b, 1, t, 1]), this.invFreq.reshape([1, 1, 1, this.headDim / 2]));
    const c = tf.cos(freqs);
    const s = tf.sin(freqs);
    return { cos: tf.concat([c, c], 3), sin: tf.concat([tf.neg(s), s], 3) };
  }

  dispose(): void {
    tf.dispose([this.cos, this.sinSigned, this.invFreq]);
    this.size = 0;
  }
}

type RopeInputs = { x: tf.Tensor; cos: tf.Tensor; sin: tf.Tensor };

/** cat(x2, x1) along the last axis: rotate_half without its sign (kept in the signed-sin table). */
function swapHalves(x: tf.Tensor): tf.Tensor {
  const r = x.rank;
  const d = x.shape[r - 1] as number;
  const [x1, x2] = tf.split(x, [d / 2, d / 2], r - 1);
  return tf.concat([x2, x1], r - 1);
}

/** Sums a gradient over the axes `like` was broadcast along. */
function reduceTo(g: tf.Tensor, like: tf.Tensor): tf.Tensor {
  const axes = like.shape.map((d, i) => (d === 1 && g.shape[i] !== 1 ? i : -1)).filter((i) => i >= 0);
  return axes.length ? tf.sum(g, axes, true) : g;
}

/**
 * `peftjs.Rope`: x·cos + cat(x2, x1)·sinSigned for x [B, H, T, D], cos and sinSigned [1 or B, 1, T, D]
 * (HF's apply_rotary_pos_emb with rotate_half's sign folded into the table); with `transpose`, its
 * transpose x·cos + swap(x·sinSigned), which is the gradient's. The reference is tfjs ops; the CPU fast
 * path (wasm, cpu) does either in one pass, where tfjs runs split, concat, two multiplies and an add each
 * way (≈ 45 ms of a 500 ms tiny-llama LoRA step on wasm).
 */
export const ropeOp = defineOp<RopeInputs, { transpose?: boolean }>({
  name: 'peftjs.Rope',
  inputNames: ['x', 'cos', 'sin'],
  reference: ({ x, cos, sin }, { transpose }) =>
    transpose ? tf.add(tf.mul(x, cos), swapHalves(tf.mul(x, sin))) : tf.add(tf.mul(x, cos), tf.mul(swapHalves(x), sin)),
  describe: 'x [B, H, T, D], cos / sin [1|B, 1, T, D]',
});

function ropeKernel({ inputs, attrs, backend }: { inputs: RopeInputs; attrs: { transpose?: boolean }; backend: unknown }): tf.TensorInfo {
  const be = hostBackend(backend, 'peftjs.Rope');
  const heap = wasmHeapBackend(backend);
  const x = inputs.x as unknown as tf.TensorInfo;
  const cos = inputs.cos as unknown as tf.TensorInfo;
  const sin = inputs.sin as unknown as tf.TensorInfo;
  const [b, h, t, d] = x.shape;
  const cb = cos.shape[0];
  const ok = x.shape.length === 4 && d % 2 === 0 && x.dtype === 'float32' && cos.dtype === 'float32' && sin.dtype === 'float32' &&
    tf.util.arraysEqual(cos.shape, sin.shape) && cos.shape.length === 4 && (cb === 1 || cb === b) && cos.shape[1] === 1 && cos.shape[2] === t && cos.shape[3] === d;
  if (!ok) throw new Error(`peftjs.Rope: x must be float32 [B, H, T, D] (D even) and cos / sin [1 or B, 1, T, D]; got x [${x.shape}], cos [${cos.shape}], sin [${sin.shape}]`);
  const outInfo = heap?.makeOutput(x.shape, 'float32');
  // views after makeOutput: allocating may grow (and so detach) the wasm heap
  const view = (t: tf.TensorInfo) => (heap ? heap.typedArrayFromHeap(t) : be.readSync(t.dataId)) as Float32Array;
  const xv = view(x);
  const cv = view(cos);
  const sv = view(sin);
  const out = outInfo ? (heap!.typedArrayFromHeap(outInfo) as Float32Array) : new Float32Array(xv.length);
  const half = d / 2;
  const rowsPerTable = t * d;
  // the sin entry paired with x[j + half] (out[j]) and with x[j] (out[j + half]): the same index as the
  // output, or, transposed, the partner's
  const sLo = attrs.transpose ? half : 0;
  const sHi = attrs.transpose ? -half : 0;
  for (let bi = 0; bi < b; bi++) {
    const tableBase = cb === 1 ? 0 : bi * rowsPerTable;
    for (let hi = 0; hi < h; hi++) {
      const base = (bi * h + hi) * rowsPerTable;
      for (let ti = 0; ti < t; ti++) {
        const o = base + ti * d;
        const c = tableBase + ti * d;
        // each product rounded to float32, then the sum: the reference's rounding exactly
        for (let j = 0; j < half; j++) {
          out[o + j] = Math.fround(xv[o + j] * cv[c + j]) + Math.fround(xv[o + j + half] * sv[c + j + sLo]);
          out[o + j + half] = Math.fround(xv[o + j + half] * cv[c + j + half]) + Math.fround(xv[o + j] * sv[c + j + half + sHi]);
        }
      }
    }
  }
  if (outInfo) return outInfo;
  return { dataId: be.write(out, x.shape, 'float32'), shape: [...x.shape], dtype: 'float32' };
}

for (const backendName of ['wasm', 'cpu', 'webgpu']) {
  registerFastPath(ropeOp, {
    backendName,
    kernelFunc: backendName === 'webgpu' ? ropeWebgpu : ropeKernel,
    gradient: (dy, { x, cos, sin }, { transpose }) => ({
      // the op is linear in x: its gradient is the transposed op applied to dy (and the transpose's, the op)
      x: () => ropeOp({ x: dy, cos, sin }, { transpose: !transpose }),
      cos: () => reduceTo(tf.mul(dy, x), cos),
      sin: () => reduceTo(transpose ? tf.mul(swapHalves(dy), x) : tf.mul(dy, swapHalves(x)), sin),
    }),
  });
}

/** x·cos + rotate_half(x)·sin for x [B, H, T, headDim], with the signed-sin table. */
export function applyRope(x: tf.Tensor, cos: tf.Tensor, sinSigned: tf.Tensor): tf.Tensor {
  return ropeOp({ x, cos, sin: sinSigned }, {});
}
