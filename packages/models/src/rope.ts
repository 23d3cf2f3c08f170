import * as tf from '@tensorflow/tfjs';
import type { RopeSpec } from './config';

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

/** x·cos + rotate_half(x)·sin for x [B, H, T, headDim], with the signed-sin table. */
export function applyRope(x: tf.Tensor, cos: tf.Tensor, sinSigned: tf.Tensor): tf.Tensor {
  const d = x.shape[3] as number;
  const [x1, x2] = tf.split(x, [d / 2, d / 2], 3);
  return tf.add(tf.mul(x, cos), tf.mul(tf.concat([x2, x1], 3), sinSigned));
}
