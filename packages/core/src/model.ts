import * as tf from '@tensorflow/tfjs';
import { Module } from './nn/module';
import { PeftError } from './errors';
import type { Embedding } from './nn/layers';

/** A batch of token ids or an int32 tensor [B, T]. */
export type IdsLike = number[][] | tf.Tensor;

/**
 * One layer's keys and values kept in preallocated buffers key/value [B, kvHeads, capacity, headDim]
 * (webgpu generation): positions 0..length-1 are valid, later ones are written in place as decoding
 * goes (no concatenation per token). The tensors are the cache's own.
 */
export interface KVSlab {
  key: tf.Tensor;
  value: tf.Tensor;
  length: number;
  capacity: number;
}

/**
 * Past keys and values of every layer: key/value [B, kvHeads, T, headDim]. `update` appends one
 * step and returns the full keys/values. Tensors the cache created are its own and are disposed
 * when replaced or on `dispose()`; tensors handed in (a prefix from prefix tuning) are only referenced,
 * so gradients can flow through them. On webgpu the models' generation keeps a layer in a `KVSlab`
 * instead (`slabs[layer]`; `keys[layer]` is then unset): see the models package's withPast.
 */
export class KVCache {
  readonly keys: (tf.Tensor | undefined)[] = [];
  readonly values: (tf.Tensor | undefined)[] = [];
  readonly slabs: (KVSlab | undefined)[] = [];
  private readonly owned = new Set<tf.Tensor>();

  /**
   * @param capacityHint the number of positions the cache is expected to reach (generation: prompt +
   *   new tokens), so that a slab is allocated once at that size; 0: grown by doubling.
   */
  constructor(readonly capacityHint = 0) {
    if (!Number.isInteger(capacityHint) || capacityHint < 0) throw new PeftError('INVALID_ARGUMENT', `KVCache: capacityHint must be a non-negative integer, got ${capacityHint}`);
  }

  /** A cache seeded with given per-layer keys/values (not owned). */
  static fromTensors(layers: { key: tf.Tensor; value: tf.Tensor }[]): KVCache {
    const c = new KVCache();
    layers.forEach((l, i) => {
      c.keys[i] = l.key;
      c.values[i] = l.value;
    });
    return c;
  }

  /** Number of positions already cached (of layer 0). */
  get length(): number {
    const s = this.slabs[0];
    if (s) return s.length;
    return this.keys[0]?.shape[2] ?? 0;
  }

  /**
   * Appends k, v [B, kvHeads, t, headDim] to layer `layer`; returns the full keys and values.
   * With `keep` (generation), the result survives an enclosing tf.tidy and the old one is disposed.
   */
  update(layer: number, k: tf.Tensor, v: tf.Tensor, keep = false): { key: tf.Tensor; value: tf.Tensor } {
    if (this.slabs[layer]) throw new PeftError('INVALID_ARGUMENT', `KVCache.update: layer ${layer} is held in a slab (webgpu generation); append through the models' withPast`);
    const oldK = this.keys[layer];
    const oldV = this.values[layer];
    const key = oldK ? tf.concat([oldK, k], 2) : k;
    const value = oldV ? tf.concat([oldV, v], 2) : v;
    if (keep) {
      for (const old of [oldK, oldV]) if (old) this.release(old);
      tf.keep(key);
      tf.keep(value);
      this.owned.add(key);
      this.owned.add(value);
    }
    this.keys[layer] = key;
    this.values[layer] = value;
    return { key, value };
  }

  /**
   * Makes `slab` layer `layer`'s storage (kept and owned; the layer's former slab and tensors, where
   * owned, are disposed unless they are the new slab's).
   */
  setSlab(layer: number, slab: KVSlab): void {
    const old = this.slabs[layer];
    for (const t of [old?.key, old?.value, this.keys[layer], this.values[layer]]) {
      if (t && t !== slab.key && t !== slab.value) this.release(t);
    }
    this.keys[layer] = undefined;
    this.values[layer] = undefined;
    for (const t of [slab.key, slab.value]) {
      if (!this.owned.has(t)) {
        tf.keep(t);
        this.owned.add(t);
      }
    }
    this.slabs[layer] = slab;
  }

  private release(t: tf.Tensor): void {
    if (!this.owned.has(t)) return;
    this.owned.delete(t);
    t.dispose();
  }

  /** Disposes the tensors this cache created. */
  dispose(): void {
    for (const t of this.owned) t.dispose();
    this.owned.clear();
    this.slabs.length = 0;
  }
}

export interface ForwardInputs {
  inputIds?: IdsLike;
  /** [B, pastLength + T]: 1 keeps a position, 0 masks it. */
  attentionMask?: IdsLike;
  /** [B, T]; defaults to pastLength + 0..T-1 as HF's forward does. */
  positionIds?: IdsLike;
  /** [B, T, hidden], instead of inputIds. */
  inputsEmbeds?: tf.Tensor;
  pastKeyValues?: KVCache;
  /** Store new keys/values in pastKeyValues (generation). */
  useCache?: boolean;
  /** [B, T]; -100 is ignored. When given, `loss` is the mean cross-entropy of the shifted labels. */
  labels?: IdsLike;
  /** Compute logits for the last `logitsToKeep` positions only (HF's logits_to_keep; generation uses 1). */
  logitsToKeep?: number;
}

export interface ForwardOutput {
  logits: tf.Tensor;
  loss?: tf.Scalar;
  pastKeyValues?: KVCache;
}

/** Config fields every base model exposes, normalized from HF's config.json. */
export interface ModelConfig {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  tieWordEmbeddings: boolean;
  bosTokenId?: number | number[] | null;
  eosTokenId?: number | number[] | null;
  padTokenId?: number | null;
  /** The config.json as read. */
  raw: Record<string, unknown>;
}

export interface GenerateOptions {
  inputIds: IdsLike;
  attentionMask?: IdsLike;
  maxNewTokens?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  eosTokenId?: number | number[];
  padTokenId?: number;
  seed?: number;
}

/** The forward the generation loop calls; PEFT methods that change the inputs supply their own. */
export type ForwardFn = (inputs: ForwardInputs) => ForwardOutput;

/**
 * The contract between a base model and PEFT: an HF-named module tree with a forward, its input
 * embeddings, and the names of output heads (never targeted by `all-linear`).
 */
export abstract class PreTrainedModel extends Module {
  abstract readonly config: ModelConfig;
  /** Module paths of output heads, e.g. ['lm_head'] or ['score']. */
  abstract readonly outputHeadNames: string[];
  /** 'CAUSAL_LM' or 'SEQ_CLS'. */
  abstract readonly taskType: string;
  abstract forward(inputs: ForwardInputs): ForwardOutput;
  abstract getInputEmbeddings(): Embedding;
  /** Greedy or sampled generation; `forward` replaces this model's forward (PEFT wrappers). */
  abstract generate(opts: GenerateOptions, forward?: ForwardFn): Promise<number[][]>;

  /**
   * HF's gradient_checkpointing_enable: every layer that supports it (a `gradientCheckpointing` flag,
   * the decoder layers of the built-in models) keeps only its input during a training forward and
   * recomputes its activations in backward (core's `checkpoint`): less memory for one more forward.
   */
  gradientCheckpointingEnable(): void {
    if (!this.setGradientCheckpointing(true)) {
      throw new PeftError('UNSUPPORTED', `${this.constructor.name} has no layers that support gradient checkpointing`);
    }
  }

  gradientCheckpointingDisable(): void {
    this.setGradientCheckpointing(false);
  }

  /** HF's is_gradient_checkpointing. */
  get isGradientCheckpointing(): boolean {
    for (const [, m] of this.namedModules()) if (isCheckpointable(m) && m.gradientCheckpointing) return true;
    return false;
  }

  private setGradientCheckpointing(on: boolean): number {
    let n = 0;
    for (const [, m] of this.namedModules()) {
      if (!isCheckpointable(m)) continue;
      m.gradientCheckpointing = on;
      n++;
    }
    return n;
  }
}

/** A module whose forward can run under activation checkpointing (see PreTrainedModel.gradientCheckpointingEnable). */
export interface CheckpointableModule {
  gradientCheckpointing: boolean;
}

export function isCheckpointable(m: unknown): m is CheckpointableModule {
  return typeof (m as { gradientCheckpointing?: unknown })?.gradientCheckpointing === 'boolean';
}

export function isPreTrainedModel(m: unknown): m is PreTrainedModel {
  return m instanceof PreTrainedModel;
}

/** Converts number[][] or a tensor to an int32 tensor (the caller owns the result if it is new). */
export function toIdsTensor(x: IdsLike, what = 'inputIds'): tf.Tensor {
  if (x instanceof tf.Tensor) return x.dtype === 'int32' ? x : x.toInt();
  if (!Array.isArray(x) || !x.every(Array.isArray)) {
    throw new PeftError('INVALID_ARGUMENT', `${what} must be number[][] or an int32 tf.Tensor2D`);
  }
  const len = x[0]?.length ?? 0;
  if (!x.every((r) => r.length === len)) throw new PeftError('INVALID_ARGUMENT', `${what}: every row must have the same length (pad the batch)`);
  return tf.tensor2d(x as number[][], [x.length, len], 'int32');
}
