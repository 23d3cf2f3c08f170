import * as tf from '@tensorflow/tfjs';
import {
  BaseTunerLayer,
  Conv1D,
  Dropout,
  Embedding,
  Identity,
  Linear,
  Module,
  ModuleDict,
  ParameterDict,
  PeftError,
  kaimingUniform,
  linear2d,
  stopGradient,
  nextSeed,
  type Layer, assertFiniteMerge } from '@peftjs/core';
import { loraLinearOp } from './op';
import { mixedBatchForward } from './mixed';
import { LORA_COMPOSITIONS, loraComposedForward } from './composition';

/** DoRA's per-output magnitude, a module so its parameter is named `lora_magnitude_vector.<adapter>.weight` as in HF. */
export class DoraMagnitude extends Module {
  constructor(magnitude: tf.Tensor) {
    super();
    this.registerParameter('weight', magnitude);
  }
  get weight(): tf.Variable {
    return this.param('weight');
  }
}

export interface LoraAdapterOptions {
  r: number;
  loraAlpha: number;
  scaling: number;
  dropout: number;
  initLoraWeights: boolean | 'gaussian';
  useDora: boolean;
}

type LinearLike = Linear | Conv1D;

/**
 * A 4-bit base layer (@peftjs/quant's Linear4bit) holds packed codes, not a weight: merging into it
 * dequantises it in place first (its `requantize()` packs it again, as HF re-quantises after a merge).
 */
function floatBase(base: LinearLike): LinearLike {
  (base as { dequantizeInPlace?: () => void }).dequantizeInPlace?.();
  return base;
}

/** Row norms ‖W + s·ΔW‖ over the input dimension, W and ΔW as [out, in]. */
function weightNorm(weight: tf.Tensor, delta: tf.Tensor, scaling: number): tf.Tensor {
  return tf.norm(tf.add(weight, tf.mul(delta, scaling)), 'euclidean', 1);
}

/**
 * LoRA on a Linear (or GPT-2 Conv1D with fanInFanOut): y = base(x) + s·B(A(dropout(x))), with DoRA's
 * magnitude rescaling when enabled. The whole of LoRA's math for linear layers is in this class.
 */
export class LoraLinear extends BaseTunerLayer {
  readonly peftType = 'LORA';
  readonly fanInFanOut: boolean;
  readonly r: Record<string, number> = {};
  readonly loraAlpha: Record<string, number> = {};
  readonly scaling: Record<string, number> = {};
  readonly useDora: Record<string, boolean> = {};
  private readonly doraNormCache = new Map<string, tf.Tensor>();
  /** Per-sample adapters of the current forward (PeftModel.forward's adapterNames), one per row; null: the active ones. */
  perSampleAdapters: string[] | null = null;
  override readonly supportedCompositions = LORA_COMPOSITIONS;

  constructor(base: LinearLike | BaseTunerLayer, fanInFanOut: boolean) {
    super(base);
    this.fanInFanOut = fanInFanOut;
    const inner = this.getBaseLayer();
    if (!(inner instanceof Linear) && !(inner instanceof Conv1D)) {
      throw new PeftError('INVALID_ARGUMENT', `LoraLinear wraps Linear or Conv1D, not ${inner.constructor.name}`);
    }
    this.registerModule('lora_A', new ModuleDict<Linear>());
    this.registerModule('lora_B', new ModuleDict<Linear>());
    this.registerModule('lora_dropout', new ModuleDict<Dropout | Identity>());
    this.registerModule('lora_magnitude_vector', new ModuleDict<DoraMagnitude>());
  }

  get loraA(): ModuleDict<Linear> {
    return this.child('lora_A');
  }
  get loraB(): ModuleDict<Linear> {
    return this.child('lora_B');
  }
  get loraDropout(): ModuleDict<Dropout | Identity> {
    return this.child('lora_dropout');
  }
  get loraMagnitude(): ModuleDict<DoraMagnitude> {
    return this.child('lora_magnitude_vector');
  }

  get inFeatures(): number {
    return (this.getBaseLayer() as LinearLike).inFeatures;
  }
  get outFeatures(): number {
    return (this.getBaseLayer() as LinearLike).outFeatures;
  }

  /** The base weight as [out, in] (transposed from Conv1D's [in, out]). */
  private baseWeightOutIn(): tf.Tensor {
    const w = (this.getBaseLayer() as LinearLike).weight;
    return this.fanInFanOut ? tf.transpose(w) : w;
  }

  adapterNames(): string[] {
    return this.loraA.keys();
  }

  updateLayer(name: string, o: LoraAdapterOptions): void {
    if (this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer already has a LoRA adapter "${name}"`);
    const { r } = o;
    const inF = this.inFeatures;
    const outF = this.outFeatures;
    this.r[name] = r;
    this.loraAlpha[name] = o.loraAlpha;
    this.scaling[name] = o.scaling;
    this.useDora[name] = o.useDora;
    this.loraDropout.set(name, o.dropout > 0 ? new Dropout(o.dropout) : new Identity());
    // HF's reset_lora_parameters: A kaiming-uniform(a=√5) (or N(0, 1/r) for 'gaussian'), B zero.
    const aInit =
      o.initLoraWeights === 'gaussian' ? tf.randomNormal([r, inF], 0, 1 / r, 'float32', nextSeed()) : kaimingUniform([r, inF], inF);
    const bInit = o.initLoraWeights === false ? kaimingUniform([outF, r], r) : tf.zeros([outF, r]);
    this.loraA.set(name, new Linear(inF, r, { bias: false, weight: aInit }));
    this.loraB.set(name, new Linear(r, outF, { bias: false, weight: bInit }));
    tf.dispose([aInit, bInit]);
    if (o.useDora) {
      const mag = tf.tidy(() => weightNorm(this.baseWeightOutIn(), this.deltaOutIn(name, 1), o.scaling));
      this.loraMagnitude.set(name, new DoraMagnitude(mag));
      mag.dispose();
    }
    this.training = this.baseLayer.training;
  }

  /** B·A as [out, in], times `scale`. */
  private deltaOutIn(name: string, scale: number): tf.Tensor {
    return tf.tidy(() => {
      const d = tf.matMul(this.loraB.get(name)!.weight, this.loraA.get(name)!.weight);
      return scale === 1 ? d : tf.mul(d, scale);
    });
  }

  /** HF's get_delta_weight: transpose(B·A, fan_in_fan_out) · scaling, in the base weight's layout. */
  getDeltaWeight(name: string): tf.Tensor {
    return tf.tidy(() => {
      const d = this.deltaOutIn(name, this.scaling[name]);
      return this.fanInFanOut ? tf.transpose(d) : d;
    });
  }

  protected mergeOne(name: string): void {
    const base = this.getBaseLayer() as LinearLike;
    const next = this.mergedWeight(name);
    base.weight.assign(next);
    next.dispose();
  }

  /** safe_merge: the merged weight is checked for NaN/Inf (an asynchronous read) before it replaces the base weight. */
  protected override async mergeOneChecked(name: string): Promise<void> {
    const next = this.mergedWeight(name);
    await assertFiniteMerge(next, 'LoRA', name);
    (this.getBaseLayer() as LinearLike).weight.assign(next);
    next.dispose();
  }

  /** The base weight with adapter `name` merged in (a new tensor). */
  private mergedWeight(name: string): tf.Tensor {
    const base = floatBase(this.getBaseLayer() as LinearLike);
    return tf.tidy(() => {
      const delta = this.getDeltaWeight(name);
      if (!this.useDora[name]) return tf.add(base.weight, delta);
      const w = this.baseWeightOutIn();
      const deltaOutIn = this.fanInFanOut ? tf.transpose(delta) : delta;
      const norm = tf.keep(weightNorm(w, deltaOutIn, 1));
      this.doraNormCache.get(name)?.dispose();
      this.doraNormCache.set(name, norm);
      const factor = tf.div(this.loraMagnitude.get(name)!.weight, norm).reshape([-1, 1]);
      const merged = tf.mul(factor, tf.add(w, deltaOutIn));
      return this.fanInFanOut ? tf.transpose(merged) : merged;
    });
  }

  protected unmergeOne(name: string): void {
    const base = floatBase(this.getBaseLayer() as LinearLike);
    const next = tf.tidy(() => {
      const delta = this.getDeltaWeight(name);
      if (!this.useDora[name]) return tf.sub(base.weight, delta);
      const norm = this.doraNormCache.get(name)!;
      const factor = tf.div(this.loraMagnitude.get(name)!.weight, norm).reshape([-1, 1]);
      const w = tf.sub(tf.div(this.baseWeightOutIn(), factor), this.fanInFanOut ? tf.transpose(delta) : delta);
      return this.fanInFanOut ? tf.transpose(w) : w;
    });
    this.doraNormCache.get(name)?.dispose();
    this.doraNormCache.delete(name);
    base.weight.assign(next);
    next.dispose();
  }

  /** The DoRA norms kept while merged (Module.dispose and unload call this: they are not parameters). */
  disposeBuffers(): void {
    tf.dispose([...this.doraNormCache.values()]);
    this.doraNormCache.clear();
  }

  protected deleteOne(name: string): void {
    for (const d of [this.loraA, this.loraB, this.loraDropout, this.loraMagnitude]) if (d.has(name)) d.delete(name);
    delete this.r[name];
    delete this.loraAlpha[name];
    delete this.scaling[name];
    delete this.useDora[name];
  }

  forward(x: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(x);
    if (bypassed) return bypassed;
    if (this.perSampleAdapters) return this.mixedForward(x, this.perSampleAdapters);
    if (this.activeComposition) return loraComposedForward(this, x, this.activeComposition);
    return tf.tidy(() => {
      let result = this.baseLayer.forward(x);
      for (const name of this.activeAdapters) {
        if (!this.has(name)) continue;
        const dropout = this.loraDropout.get(name)!;
        const xd = dropout.forward(x);
        const A = this.loraA.get(name)!.weight;
        const B = this.loraB.get(name)!.weight;
        if (!this.useDora[name]) {
          result = loraLinearOp({ base: result, x: xd, loraA: A, loraB: B }, { scaling: this.scaling[name] });
        } else {
          result = tf.add(result, this.doraDelta(name, xd, dropout instanceof Identity || !this.training ? result : null));
        }
      }
      return result;
    });
  }

  /** HF's _mixed_batch_forward: each row through its own adapter (mixed.ts), with the reference ops. */
  private mixedForward(x: tf.Tensor, names: string[]): tf.Tensor {
    return tf.tidy(() =>
      mixedBatchForward(x, this.baseLayer.forward(x), names, (name, sub) => {
        if (!this.has(name)) return null;
        if (this.useDora[name]) throw new PeftError('UNSUPPORTED', `adapterNames: adapter "${name}" uses DoRA, which per-sample adapters do not support (as in HF)`);
        const xd = this.loraDropout.get(name)!.forward(sub);
        const A = this.loraA.get(name)!.weight;
        const B = this.loraB.get(name)!.weight;
        return tf.mul(linear2d(xd, (x2) => tf.matMul(tf.matMul(x2, A, false, true), B, false, true)), this.scaling[name]);
      }),
    );
  }

  /**
   * DoRA (HF's DoraLinearLayer.forward): (m/‖W + sBA‖ − 1)·(base − bias) + m/‖W + sBA‖ · s·B(A(x)),
   * the norm detached from the graph. `baseResult` is the base output, or null when dropout changed x.
   */
  private doraDelta(name: string, x: tf.Tensor, baseResult: tf.Tensor | null): tf.Tensor {
    const A = this.loraA.get(name)!.weight;
    const B = this.loraB.get(name)!.weight;
    const s = this.scaling[name];
    const w = this.baseWeightOutIn();
    const norm = stopGradient(weightNorm(w, stopGradient(tf.matMul(B, A)), s));
    const magNorm = tf.div(this.loraMagnitude.get(name)!.weight, norm);
    const loraResult = linear2d(x, (x2) => tf.matMul(tf.matMul(x2, A, false, true), B, false, true));
    const bias = (this.getBaseLayer() as LinearLike).bias;
    let base: tf.Tensor;
    if (baseResult) base = bias ? tf.sub(baseResult, bias) : baseResult;
    else base = linear2d(x, (x2) => tf.matMul(x2, w, false, true));
    return tf.add(tf.mul(tf.sub(magNorm, 1), base), tf.mul(tf.mul(magNorm, loraResult), s));
  }
}

/**
 * LoRA on an Embedding: y = E[ids] + s·(Aᵀ[ids])·Bᵀ with `lora_embedding_A` [r, vocab] and
 * `lora_embedding_B` [dim, r] (HF's names; A starts at zero, B normal).
 */
export class LoraEmbedding extends BaseTunerLayer {
  readonly peftType = 'LORA';
  readonly r: Record<string, number> = {};
  readonly scaling: Record<string, number> = {};
  /** Per-sample adapters of the current forward (PeftModel.forward's adapterNames), one per row; null: the active ones. */
  perSampleAdapters: string[] | null = null;

  constructor(base: Embedding) {
    super(base);
    this.registerModule('lora_embedding_A', new ParameterDict());
    this.registerModule('lora_embedding_B', new ParameterDict());
  }
  get loraEmbeddingA(): ParameterDict {
    return this.child('lora_embedding_A');
  }
  get loraEmbeddingB(): ParameterDict {
    return this.child('lora_embedding_B');
  }
  adapterNames(): string[] {
    return this.loraEmbeddingA.keys();
  }
  updateLayer(name: string, o: LoraAdapterOptions): void {
    if (o.useDora) throw new PeftError('UNSUPPORTED', 'DoRA on embedding layers is not supported by peftjs');
    const base = this.getBaseLayer() as Embedding;
    this.r[name] = o.r;
    this.scaling[name] = o.scaling;
    const a = o.initLoraWeights === false ? tf.randomNormal([o.r, base.numEmbeddings], 0, 1, 'float32', nextSeed()) : tf.zeros([o.r, base.numEmbeddings]);
    const b = tf.randomNormal([base.embeddingDim, o.r], 0, 1, 'float32', nextSeed());
    this.loraEmbeddingA.set(name, a);
    this.loraEmbeddingB.set(name, b);
    tf.dispose([a, b]);
  }
  getDeltaWeight(name: string): tf.Tensor {
    // [vocab, dim] = (B·A)ᵀ · s
    return tf.tidy(() => tf.mul(tf.transpose(tf.matMul(this.loraEmbeddingB.get(name)!, this.loraEmbeddingA.get(name)!)), this.scaling[name]));
  }
  protected mergeOne(name: string): void {
    const base = this.getBaseLayer() as Embedding;
    const next = tf.tidy(() => tf.add(base.weight, this.getDeltaWeight(name)));
    base.weight.assign(next);
    next.dispose();
  }
  protected unmergeOne(name: string): void {
    const base = this.getBaseLayer() as Embedding;
    const next = tf.tidy(() => tf.sub(base.weight, this.getDeltaWeight(name)));
    base.weight.assign(next);
    next.dispose();
  }
  protected deleteOne(name: string): void {
    this.loraEmbeddingA.delete(name);
    this.loraEmbeddingB.delete(name);
    delete this.r[name];
    delete this.scaling[name];
  }
  forward(ids: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(ids);
    if (bypassed) return bypassed;
    const delta = (name: string, x: tf.Tensor, shape: number[]) => {
      const after = tf.gather(tf.transpose(this.loraEmbeddingA.get(name)!), x.toInt());
      const d = tf.matMul(after.reshape([-1, this.r[name]]), this.loraEmbeddingB.get(name)!, false, true);
      return tf.mul(d.reshape(shape), this.scaling[name]);
    };
    return tf.tidy(() => {
      let result = this.baseLayer.forward(ids);
      const names = this.perSampleAdapters;
      if (names) return mixedBatchForward(ids, result, names, (n, sub) => (this.has(n) ? delta(n, sub, [...sub.shape, result.shape[result.rank - 1]]) : null));
      for (const name of this.activeAdapters) {
        if (!this.has(name)) continue;
        result = tf.add(result, delta(name, ids, result.shape));
      }
      return result;
    });
  }
}

export type LoraLayer = LoraLinear | LoraEmbedding;
export type { Layer };
