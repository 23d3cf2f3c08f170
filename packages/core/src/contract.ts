/**
 * The PEFT method contract, v2: everything a method implements, in one file.
 *
 * How to write a method (v2)
 * 1. A config class: `class MyConfig extends PeftConfig` with `static peftType = 'MY_METHOD'`, a zod `shape`
 *    (spread `basePeftConfigShape`; `targetModulesSchema` for targets) and `hfOnlyDefaults`.
 * 2. Injection methods (wrap target modules): a layer `extends BaseTunerLayer` that holds each adapter's
 *    parameters under a path part naming the adapter (`my_delta.<adapter>`), and an `InjectionMethod`:
 *    ```ts
 *    export const myMethod: InjectionMethod<MyConfig, Linear | MyLayer> = {
 *      specificationVersion: PEFT_METHOD_SPEC_VERSION, kind: 'injection',
 *      peftType: 'MY_METHOD', prefix: 'my_', configClass: MyConfig,   // peftType must equal MyConfig.peftType
 *      targetFields: { targetModules: 'targetModules' },                // the config fields that choose targets
 *      canWrap: (m): m is Linear | MyLayer => m instanceof Linear || m instanceof MyLayer, // own layer too (2nd adapter)
 *      inject: ({ target, adapterName }) => { const l = target instanceof MyLayer ? target : new MyLayer(target); l.add(adapterName); return l; },
 *      parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'my_'), // HF's rule; or your own
 *    };
 *    registerPeftMethod(myMethod);
 *    ```
 * 3. Prompt-learning methods (virtual tokens): a `PromptLearningMethod<MyConfig, MyEncoder>`; its hooks get
 *    the encoder as `MyEncoder` (no casts). `forwardWithVirtualTokens` / `forwardWithPrefix` are HF's forwards.
 * Checked, not just written: registration refuses a config class whose peftType differs from the method's;
 * adding an adapter refuses a `parameterKey` that claims another adapter's parameters or maps two to one key;
 * saving refuses an adapter whose trainable parameters `parameterKey` does not claim (they would be lost);
 * loading fills exactly what `parameterKey` claims. The method object is resolved once, when an adapter is
 * added: unregistering it later does not affect live models.
 */
import type * as tf from '@tensorflow/tfjs';
import type { Module } from './nn/module';
import type { PeftConfig, PeftConfigClass } from './config';
import type { ForwardInputs, ForwardOutput, PreTrainedModel } from './model';
import type { PeftModel } from './peft_model';
import type { SafetensorsFile } from './io/safetensors';

/** The version of this contract; a method declares the one it implements. */
export const PEFT_METHOD_SPEC_VERSION = 'v2' as const;

/** What every method has. */
interface MethodBase<C extends PeftConfig> {
  specificationVersion: typeof PEFT_METHOD_SPEC_VERSION;
  /** HF's peft_type, e.g. `LORA`; must equal `configClass.peftType`. */
  peftType: string;
  /** Unique across methods, e.g. `lora_`: the registry refuses a second owner. */
  prefix: string;
  configClass: PeftConfigClass<C>;
  /** Fills what the config leaves to the model (e.g. expands `all-linear`, token_dim) before the adapter is added. */
  prepareConfig?(config: C, model: PreTrainedModel): C;
  /** When set, merging is refused with this reason. */
  cannotMergeReason?: string;
}

/** Config keys whose value has type V. */
export type FieldOf<C, V> = { [K in keyof C]-?: C[K] extends V ? K : never }[keyof C] & string;

/** The config fields (camelCase names) holding HF's target spec; only `targetModules` is required. */
export interface TargetFields<C> {
  targetModules: FieldOf<C, string | string[] | null>;
  excludeModules?: FieldOf<C, string | string[] | null>;
  layersToTransform?: FieldOf<C, number | number[] | null>;
  layersPattern?: FieldOf<C, string | string[] | null>;
}

export interface InjectArgs<C extends PeftConfig, T extends Module = Module> {
  /** The module at `targetName`, narrowed by `canWrap` (possibly this method's own layer, for a further adapter). */
  target: T;
  /** Its path in the base model, e.g. `model.layers.0.self_attn.q_proj`. */
  targetName: string;
  adapterName: string;
  config: C;
  model: PreTrainedModel;
}

/** A method that wraps target modules (LoRA, IA3, …). `T`: the modules it wraps, its own layers included. */
export interface InjectionMethod<C extends PeftConfig = PeftConfig, T extends Module = Module> extends MethodBase<C> {
  kind: 'injection';
  targetFields: TargetFields<C>;
  /** Whether a matched module can be wrapped; a module it refuses gets an error naming it. */
  canWrap(module: Module): module is T;
  /** Wraps `target` for an adapter (or adds the adapter to this method's layer); returns the module to install. */
  inject(args: InjectArgs<C, T>): Module;
  /**
   * The file key of parameter `path` (its PeftModel path, `base_model.model.….lora_A.default.weight`) when it
   * belongs to adapter `adapterName`, else undefined. One declaration for save and load.
   */
  parameterKey(path: string, adapterName: string, config: C): string | undefined;
  /** Rewrites the tensors as saved (keys already the file's): AdaLoRA drops masked ranks. Disposes what it replaces. */
  toFileTensors?(tensors: Record<string, tf.Tensor>, config: C): Record<string, tf.Tensor>;
  /**
   * Checks the values of a file being loaded before they fill the adapter's parameters (the file's raw bytes, on
   * the host: no device read): throws a PeftError naming `source` and the tensor (diff pruning's indices must lie
   * inside their tensor, ascending). Shapes and names are PeftModel's to check.
   */
  checkFileTensors?(args: { file: SafetensorsFile; source: string; config: C; peft: PeftModel; adapterName: string }): void;
  /** A term added to the loss for each trained adapter, inside the forward (AdaLoRA's orthogonal regulariser). */
  lossTerm?(args: { peft: PeftModel; adapterName: string; config: C }): tf.Scalar | null;
  /**
   * Work after each optimizer step that needs its gradients (AdaLoRA's update_and_allocate), for each trained
   * adapter. `grads` by PeftModel parameter names (clipped); `apply`: the device flag gating the update (GPU),
   * where 0 nothing may change. No synchronous reads.
   */
  afterOptimizerStep?(args: { peft: PeftModel; adapterName: string; config: C; step: number; grads: Record<string, tf.Tensor>; apply?: tf.Scalar }): void | Promise<void>;
  /** PeftModel.addWeightedAdapter (HF's add_weighted_adapter); absent: no weighted combination. */
  addWeightedAdapter?(args: { peft: PeftModel; adapters: string[]; weights: number[]; adapterName: string; options: WeightedAdapterOptions }): Promise<void>;
}

/** A method that adds virtual tokens (prompt, prefix, P-tuning). `E`: its prompt encoder (`prompt_encoder.<adapter>`). */
export interface PromptLearningMethod<C extends PeftConfig = PeftConfig, E extends Module = Module> extends MethodBase<C> {
  kind: 'prompt-learning';
  createEncoder(model: PreTrainedModel, config: C): E;
  /** The tensors HF saves (`prompt_embeddings`: the encoder's output); the caller disposes them. */
  saveTensors(encoder: E, config: C): Record<string, tf.Tensor>;
  /** The encoder's own weights, saved as `peftjs_prompt_encoder.safetensors` to resume training; undefined: none. */
  saveEncoderState?(encoder: E, config: C): Record<string, tf.Tensor> | undefined;
  /** Loads HF's tensors (and `encoderState` from peftjs's encoder file when present) into the encoder. */
  loadTensors(encoder: E, tensors: Record<string, tf.Tensor>, config: C, source: string, encoderState?: Record<string, tf.Tensor>): void | Promise<void>;
  /** The forward with the virtual tokens (usually `forwardWithVirtualTokens` or `forwardWithPrefix`). */
  forward(args: { model: PreTrainedModel; encoder: E; config: C; inputs: ForwardInputs }): ForwardOutput;
}

/** A PEFT method: one of the two kinds, told apart by `kind`. */
export type PeftMethod<C extends PeftConfig = PeftConfig> = InjectionMethod<C, any> | PromptLearningMethod<C, any>;

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

/**
 * HF's naming rule (save_and_load.py), for `parameterKey`: a parameter is adapter `adapterName`'s when a path
 * part starting with `prefix` is followed by the adapter name; the file key drops the name
 * (`….lora_A.default.weight` → `….lora_A.weight`). Undefined otherwise.
 */
export function prefixedParameterKey(path: string, adapterName: string, prefix: string): string | undefined {
  const parts = path.split('.');
  const i = parts.findIndex((p, j) => p === adapterName && j > 0 && parts[j - 1].startsWith(prefix));
  return i < 0 ? undefined : [...parts.slice(0, i), ...parts.slice(i + 1)].join('.');
}
