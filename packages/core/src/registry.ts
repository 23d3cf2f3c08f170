import type * as tf from '@tensorflow/tfjs';
import type { Module } from './nn/module';
import type { PeftConfig, PeftConfigClass } from './config';
import type { ForwardInputs, ForwardOutput, PreTrainedModel } from './model';
import type { PeftModel } from './peft_model';
import { PeftError } from './errors';

/** The version of the method contract below; a plugin declares the one it implements. */
export const PEFT_METHOD_SPEC_VERSION = 'v1' as const;

export interface InjectArgs<C extends PeftConfig> {
  /** The module found at `targetName` (possibly already a tuner layer of this method). */
  target: Module;
  /** Its path in the base model, e.g. `model.layers.0.self_attn.q_proj`. */
  targetName: string;
  adapterName: string;
  config: C;
  model: PreTrainedModel;
}

/**
 * What a prompt-learning method (prompt, prefix, P-tuning) supplies instead of layer injection.
 * `forwardWithVirtualTokens` and `forwardWithPrefix` (core's prompt_learning.ts) implement HF's two
 * forwards; a method's `forward` usually calls one of them with its encoder's output.
 */
export interface PromptLearningHooks<C extends PeftConfig> {
  /** Builds the trainable prompt encoder of one adapter (saved under `prompt_encoder.<adapter>`). */
  createEncoder(model: PreTrainedModel, config: C): Module;
  /** The adapter's tensors as HF saves them (`prompt_embeddings`); the caller disposes them. */
  saveTensors(encoder: Module, config: C): Record<string, tf.Tensor>;
  /**
   * The encoder's own weights (HF's file holds only its output), written by peftjs beside HF's file as
   * `peftjs_prompt_encoder.safetensors` so training can resume; undefined when the output is all there is.
   * The caller disposes them.
   */
  saveEncoderState?(encoder: Module, config: C): Record<string, tf.Tensor> | undefined;
  /**
   * Loads HF's saved tensors into an encoder (for inference the encoder may be replaced by the table).
   * `encoderState` holds the tensors of `peftjs_prompt_encoder.safetensors` when that file is present.
   */
  loadTensors(encoder: Module, tensors: Record<string, tf.Tensor>, config: C, source: string, encoderState?: Record<string, tf.Tensor>): void | Promise<void>;
  /** The forward with the virtual tokens, for the active adapter. */
  forward(args: { model: PreTrainedModel; encoder: Module; config: C; inputs: ForwardInputs }): ForwardOutput;
}

/**
 * A PEFT method: a plain object registered under HF's peft_type. Everything peftjs does with a
 * method goes through this contract, so a third-party package can add one with the public API alone.
 */
export interface PeftMethod<C extends PeftConfig = PeftConfig> {
  specificationVersion: typeof PEFT_METHOD_SPEC_VERSION;
  /** HF's peft_type, e.g. `LORA`. */
  peftType: string;
  /** Prefix of the method's parameter names, e.g. `lora_`; unique across methods. */
  prefix: string;
  configClass: PeftConfigClass<C>;
  /** `injection` wraps target modules; `prompt-learning` adds virtual tokens. */
  kind: 'injection' | 'prompt-learning';
  /** Fills what the config leaves to the model (e.g. expands `all-linear`, token_dim) before injection. */
  prepareConfig?(config: C, model: PreTrainedModel): C;
  /** Injection: whether a matched module can be wrapped (otherwise a clear error names it). */
  canWrap?(module: Module): boolean;
  /** Injection: wraps `target` for an adapter, or adds the adapter to an existing wrapper; returns the module to install. */
  inject?(args: InjectArgs<C>): Module;
  /** Rewrites a saved key after the adapter name is removed (e.g. DoRA's `lora_magnitude_vector.weight` → `lora_magnitude_vector`). */
  toFileKey?(key: string, config: C): string;
  /** Whether an in-memory parameter path (adapter name removed) belongs to the saved adapter. */
  isAdapterKey?(key: string, config: C): boolean;
  /** Prompt learning. */
  promptLearning?: PromptLearningHooks<C>;
  /** When set, merging is refused with this reason. */
  cannotMergeReason?: string;
  /**
   * Injection: a term PeftModel.forward adds to the loss whenever it computes one, for each adapter of this
   * method that is trained (not inferenceMode), inside the forward so gradients flow through it (HF's
   * AdaLoraModel.forward adds its orthogonal regulariser so). Null adds nothing.
   */
  lossTerm?(args: { peft: PeftModel; adapterName: string; config: C }): tf.Scalar | null;
  /**
   * Work after each optimizer step that needs that step's gradients (AdaLoRA's update_and_allocate), run by
   * `PeftModel.afterOptimizerStep` for each trained adapter of the method: the Trainer calls it after every
   * update, before the gradients are freed. `step` counts optimizer steps from 0; `grads` are keyed by the
   * PeftModel's parameter names (as the optimizer got them: clipped); `apply`, when given, is the device
   * flag the update was gated by (GPU backends), and the work must change nothing where it is 0. No
   * synchronous reads: anything read is read with `await t.data()`.
   */
  afterOptimizerStep?(args: { peft: PeftModel; adapterName: string; config: C; step: number; grads: Record<string, tf.Tensor>; apply?: tf.Scalar }): void | Promise<void>;
  /**
   * Rewrites the adapter's tensors as they are saved (keys already the file's), e.g. AdaLoRA drops the ranks
   * its rank_pattern masked, as HF saves it. Tensors it replaces it disposes.
   */
  toFileTensors?(tensors: Record<string, tf.Tensor>, config: C): Record<string, tf.Tensor>;
  /**
   * PeftModel.addWeightedAdapter: adds `adapterName` combining existing adapters of this method (HF's
   * LoraModel.add_weighted_adapter). Undefined: the method has no weighted combination.
   */
  addWeightedAdapter?(args: { peft: PeftModel; adapters: string[]; weights: number[]; adapterName: string; options: WeightedAdapterOptions }): Promise<void>;
}

/** Options of PeftModel.addWeightedAdapter (HF's add_weighted_adapter keywords, camelCase). */
export interface WeightedAdapterOptions {
  /** HF's combination types; default `svd` (a single adapter always combines `linear`). */
  combinationType?:
    | 'svd' | 'linear' | 'cat' | 'ties' | 'ties_svd' | 'dare_linear' | 'dare_ties' | 'dare_linear_svd' | 'dare_ties_svd' | 'magnitude_prune' | 'magnitude_prune_svd';
  /** The new adapter's rank for the *_svd types (default: the largest rank combined). */
  svdRank?: number | null;
  /** Quantile in [0, 1] at which the SVD's factors are clamped (default: none). */
  svdClamp?: number | null;
  /** Accepted for HF parity; the factors used are the same either way. */
  svdFullMatrices?: boolean;
  /** Fraction of entries kept by the ties, dare and magnitude_prune types, in [0, 1]. */
  density?: number | null;
  majoritySignMethod?: 'total' | 'frequency';
  /** Seed of DARE's random masks (default: the next seed of core's global stream). */
  seed?: number;
}

const byType = new Map<string, PeftMethod<any>>();

/** Registers a method; duplicate peft_types and prefixes are refused. Returns the method. */
export function registerPeftMethod<C extends PeftConfig>(method: PeftMethod<C>, opts: { override?: boolean } = {}): PeftMethod<C> {
  if (method.specificationVersion !== PEFT_METHOD_SPEC_VERSION) {
    throw new PeftError('REGISTRY', `method ${method.peftType}: specificationVersion "${String(method.specificationVersion)}" is not supported (expected "${PEFT_METHOD_SPEC_VERSION}")`);
  }
  if (!/^[A-Z][A-Z0-9_]*$/.test(method.peftType)) {
    throw new PeftError('REGISTRY', `method peftType "${method.peftType}" must be upper-case letters, digits and _ (HF's peft_type)`);
  }
  if (!method.prefix || method.prefix.includes('.')) throw new PeftError('REGISTRY', `method ${method.peftType}: prefix "${method.prefix}" is invalid`);
  const existing = byType.get(method.peftType);
  if (existing === method) return method;
  if (existing && !opts.override) throw new PeftError('REGISTRY', `a PEFT method named "${method.peftType}" is already registered`);
  for (const m of byType.values()) {
    if (m.peftType !== method.peftType && m.prefix === method.prefix) {
      throw new PeftError('REGISTRY', `parameter prefix "${method.prefix}" of ${method.peftType} is already used by ${m.peftType}`);
    }
  }
  if (method.kind === 'injection' && !method.inject) throw new PeftError('REGISTRY', `injection method ${method.peftType} has no inject()`);
  if (method.kind === 'prompt-learning' && !method.promptLearning) {
    throw new PeftError('REGISTRY', `prompt-learning method ${method.peftType} has no promptLearning hooks`);
  }
  byType.set(method.peftType, method);
  return method;
}

export function unregisterPeftMethod(peftType: string): void {
  byType.delete(peftType);
}

export function getPeftMethod(peftType: string): PeftMethod {
  const m = byType.get(peftType);
  if (!m) {
    throw new PeftError(
      'UNKNOWN_METHOD',
      `unknown peft_type "${peftType}"; registered: ${[...byType.keys()].join(', ') || 'none'} (import the method's package, or 'peftjs' for all)`,
    );
  }
  return m;
}

export function listPeftMethods(): PeftMethod[] {
  return [...byType.values()];
}
