import * as tf from '@tensorflow/tfjs';
import { BaseTunerLayer, Conv1D, Linear, ParameterDict, PeftError, nextSeed, assertFiniteMerge } from '@peftjs/core';
import { IA3_COMPOSITIONS, ia3ComposedForward } from './composition';

type LinearLike = Linear | Conv1D;

/**
 * (IA)³ on a Linear (or GPT-2 Conv1D): a learned vector `ia3_l` scales the layer's output
 * (y = base(x) ⊙ l, l [out, 1]) or, for feed-forward modules, its input (y = base(x ⊙ l), l [1, in]).
 * Several active adapters multiply. Merging multiplies the weight (and, for output scaling, the bias).
 */
export class IA3Linear extends BaseTunerLayer {
  readonly peftType = 'IA3';
  readonly isFeedforward: boolean;
  readonly fanInFanOut: boolean;
  override readonly supportedCompositions = IA3_COMPOSITIONS;

  constructor(base: LinearLike | BaseTunerLayer, isFeedforward: boolean, fanInFanOut: boolean) {
    super(base);
    const inner = this.getBaseLayer();
    if (!(inner instanceof Linear) && !(inner instanceof Conv1D)) throw new PeftError('INVALID_ARGUMENT', `IA3Linear wraps Linear or Conv1D, not ${inner.constructor.name}`);
    this.isFeedforward = isFeedforward;
    this.fanInFanOut = fanInFanOut;
    this.registerModule('ia3_l', new ParameterDict());
  }

  get ia3L(): ParameterDict {
    return this.child('ia3_l');
  }
  get inFeatures(): number {
    return (this.getBaseLayer() as LinearLike).inFeatures;
  }
  get outFeatures(): number {
    return (this.getBaseLayer() as LinearLike).outFeatures;
  }

  adapterNames(): string[] {
    return this.ia3L.keys();
  }

  updateLayer(name: string, initIa3Weights: boolean): void {
    if (this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer already has an IA3 adapter "${name}"`);
    const shape = this.isFeedforward ? [1, this.inFeatures] : [this.outFeatures, 1];
    const init = initIa3Weights ? tf.ones(shape) : tf.randomNormal(shape, 0, 1, 'float32', nextSeed());
    this.ia3L.set(name, init);
    init.dispose();
    this.training = this.baseLayer.training;
  }

  /** The vector in the base weight's layout: [out, 1] / [1, in] for Linear, transposed for Conv1D ([in, out]). */
  private weightScale(name: string): tf.Tensor {
    const l = this.ia3L.get(name)!;
    return this.fanInFanOut ? tf.transpose(l) : l;
  }

  protected mergeOne(name: string): void {
    this.putMerged(name, tf.tidy(() => tf.mul((this.getBaseLayer() as LinearLike).weight, this.weightScale(name))));
  }

  /** safe_merge: the scaled weight is checked for NaN/Inf (an asynchronous read) before it replaces the base weight. */
  protected override async mergeOneChecked(name: string): Promise<void> {
    const next = tf.tidy(() => tf.mul((this.getBaseLayer() as LinearLike).weight, this.weightScale(name)));
    await assertFiniteMerge(next, 'IA3', name);
    this.putMerged(name, next);
  }

  /** Puts the merged weight `next` (disposed here) in place, and scales the bias as HF does. */
  private putMerged(name: string, next: tf.Tensor): void {
    const base = this.getBaseLayer() as LinearLike;
    base.weight.assign(next);
    next.dispose();
    if (!this.isFeedforward && base.bias) {
      const b = tf.tidy(() => tf.mul(base.bias!, this.ia3L.get(name)!.reshape([-1])));
      base.bias.assign(b);
      b.dispose();
    }
  }

  protected unmergeOne(name: string): void {
    const base = this.getBaseLayer() as LinearLike;
    // HF divides by l + 1e-8 (so the result is inexact, as HF warns)
    const next = tf.tidy(() => tf.div(base.weight, tf.add(this.weightScale(name), 1e-8)));
    base.weight.assign(next);
    next.dispose();
    if (!this.isFeedforward && base.bias) {
      const b = tf.tidy(() => tf.div(base.bias!, tf.add(this.ia3L.get(name)!.reshape([-1]), 1e-8)));
      base.bias.assign(b);
      b.dispose();
    }
  }

  protected deleteOne(name: string): void {
    this.ia3L.delete(name);
  }

  forward(x: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(x);
    if (bypassed) return bypassed;
    if (this.activeComposition) return ia3ComposedForward(this, x, this.activeComposition);
    return tf.tidy(() => {
      let scale: tf.Tensor | null = null;
      for (const name of this.activeAdapters) {
        const l = this.ia3L.get(name);
        if (!l) continue;
        const flat = l.reshape([-1]);
        scale = scale ? tf.mul(scale, flat) : flat;
      }
      if (!scale) return this.baseLayer.forward(x);
      if (this.isFeedforward) return this.baseLayer.forward(tf.mul(x, scale));
      return tf.mul(this.baseLayer.forward(x), scale);
    });
  }
}
