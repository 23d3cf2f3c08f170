import * as tf from '@tensorflow/tfjs';
import type { Module, ModuleDict } from './nn/module';
import { PeftError } from './errors';
import { camelToSnake, type PeftConfig } from './config';
import type { InjectionMethod, PeftMethod, PromptLearningMethod } from './contract';
import type { ForwardInputs, ForwardOutput, PreTrainedModel } from './model';
import type { PeftModel } from './peft_model';
import { BaseTunerLayer, targetableModules } from './tuner';
import { isExcludedModule, isTargetModule, type TargetSpec } from './targets';
import { tensorsToSafetensors, parseSafetensors, rawToTensor, type SafetensorsFile } from './io/safetensors';
import { readFileChecked, type FileSystem } from './io/fs';
import type { CommittedView } from './io/commit';
import { PROMPT_ENCODER_NAME } from './prompt_learning';
import { FUSION_MODULE } from './composition';

export { PROMPT_ENCODER_NAME };

/** What a strategy may reach of its PeftModel. */
export interface StrategyHost {
  readonly peft: PeftModel;
  readonly model: PreTrainedModel;
  config(name: string): PeftConfig;
  /** `prompt_encoder` (made on first use with `create`). */
  encoders(create: true): ModuleDict;
  encoders(create?: false): ModuleDict | undefined;
  /** The tuner layers with their PeftModel paths. */
  tunerLayers(): [string, BaseTunerLayer][];
}

/** A file being loaded: what a strategy needs to take its own tensors from it. */
export interface LoadContext {
  file: SafetensorsFile;
  path: string;
  view: CommittedView;
  fs: FileSystem;
  maxBytes: number;
  /** File keys of the adapter's parameters (filled by PeftModel after the strategy). */
  map: Map<string, tf.Variable>;
  /** Tensors the strategy read, disposed by PeftModel; their names count as expected. */
  loaded: Record<string, tf.Tensor>;
}

/**
 * How PeftModel runs one adapter, by the method's kind: injection (tuner layers in the module tree) or prompt
 * learning (an encoder whose output enters the forward). PeftModel holds one per adapter, made when the adapter
 * is added (`adapterStrategy`), and never asks the method's kind again.
 */
export interface AdapterStrategy {
  readonly name: string;
  readonly method: PeftMethod;
  /** What HF's messages call the family (`prompt-learning`). */
  readonly family: string;
  /** False: the adapter has no layers (setRequiresGrad, getLayerStatus and per-sample adapters do not apply, as in HF). */
  readonly hasLayers: boolean;
  /** At most one adapter of this family active at a time (injection adapters may be active beside it: MAM, UniPELT). */
  readonly exclusive: boolean;
  /** Whether this adapter may sit beside an adapter of `other` in one PeftModel. */
  coexistsWith(other: PeftMethod): boolean;
  /** Why it can never merge (undefined: its layers merge). */
  readonly mergeRefusal: string | undefined;
  /** Builds the adapter in the model (the config is prepared). */
  add(config: PeftConfig): void;
  /** Makes the adapter's own parameters outside tuner layers trainable or frozen. */
  setTrainable(on: boolean): void;
  /** Removes the adapter's parts outside tuner layers (deleteAdapter; unload). */
  remove(): void;
  /** The forward with this adapter active, or null when the base model's forward (through the tuner layers) is it. */
  forward(inputs: ForwardInputs): ForwardOutput | null;
  /** The file key of a PeftModel parameter path that is this adapter's (modules_to_save aside), else undefined. */
  parameterKey(path: string): string | undefined;
  /** A modules_to_save key as the file has it (its marker already removed). */
  savedModuleKey(key: string): string;
  /** Throws, naming them, when trainable parameters of the adapter are missing from `written`. */
  checkWritten(written: Map<string, tf.Variable>): void;
  /** Throws, naming it, when `claimed` (the adapter's parameters by file key) holds another adapter's parameter. */
  checkClaims(claimed: Map<string, tf.Variable>): void;
  /** The file's tensors from the parameters' copies `params` (plus the strategy's own); the caller disposes them. */
  fileTensors(params: Record<string, tf.Tensor>): Record<string, tf.Tensor>;
  /** Files beside HF's two, and stale ones to remove. */
  extraFiles(files: Record<string, Uint8Array | string>, remove: string[]): Promise<void>;
  /** Takes the strategy's own tensors from a file being loaded (before the parameters are filled). */
  loadOwn(ctx: LoadContext): Promise<void>;
  readonly lossTerm?: (peft: PeftModel) => tf.Scalar | null;
  readonly afterOptimizerStep?: (args: { peft: PeftModel; step: number; grads: Record<string, tf.Tensor>; apply?: tf.Scalar }) => void | Promise<void>;
  /** The method's weighted combination of adapters (HF's add_weighted_adapter), when it has one. */
  readonly addWeightedAdapter?: InjectionMethod['addWeightedAdapter'];
}

const isNames = (v: unknown): v is string | string[] | null => v == null || typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string'));
const isLayers = (v: unknown): v is number | number[] | null => v == null || typeof v === 'number' || (Array.isArray(v) && v.every((s) => typeof s === 'number'));

/** A config field named by the method's targetFields, checked to hold what a target spec needs (null when unnamed). */
function targetField<V>(config: PeftConfig, field: string | undefined, ok: (v: unknown) => v is V, what: string): V | null {
  if (field === undefined) return null;
  const v: unknown = Reflect.get(config, field);
  if (!ok(v)) throw new PeftError('INVALID_CONFIG', `${config.peftType}: field "${field}" (named in the method's targetFields) must be ${what}`);
  return v;
}

/** HF's target spec read from the fields the method names. */
function targetSpec(config: PeftConfig, fields: InjectionMethod<PeftConfig>['targetFields']): TargetSpec {
  const names = 'a pattern or a list of module names';
  return {
    targetModules: targetField(config, fields.targetModules, isNames, names),
    excludeModules: targetField(config, fields.excludeModules, isNames, names),
    layersToTransform: targetField(config, fields.layersToTransform, isLayers, 'a layer index or a list of them'),
    layersPattern: targetField(config, fields.layersPattern, isNames, names),
  };
}

class InjectionStrategy implements AdapterStrategy {
  readonly family = 'injection';
  readonly hasLayers = true;
  readonly exclusive = false;
  readonly mergeRefusal: string | undefined;
  readonly lossTerm?: (peft: PeftModel) => tf.Scalar | null;
  readonly afterOptimizerStep?: AdapterStrategy['afterOptimizerStep'];
  readonly addWeightedAdapter?: InjectionMethod['addWeightedAdapter'];

  constructor(private readonly host: StrategyHost, readonly name: string, readonly method: InjectionMethod<PeftConfig, Module>) {
    this.mergeRefusal = method.cannotMergeReason;
    const { lossTerm, afterOptimizerStep } = method;
    if (lossTerm) this.lossTerm = (peft) => lossTerm.call(method, { peft, adapterName: name, config: host.config(name) });
    if (afterOptimizerStep) this.afterOptimizerStep = (a) => afterOptimizerStep.call(method, { ...a, adapterName: name, config: host.config(name) });
    if (method.addWeightedAdapter) this.addWeightedAdapter = method.addWeightedAdapter.bind(method);
  }

  coexistsWith(): boolean {
    return true; // beside other injection methods (LoRA + bottleneck adapters) and prompt learning (MAM)
  }

  add(config: PeftConfig): void {
    const { model } = this.host;
    const fields = this.method.targetFields;
    const spec = targetSpec(config, fields);
    let matched = 0;
    for (const [key, target] of targetableModules(model)) {
      if (isExcludedModule(spec, key) || !isTargetModule(spec, key)) continue;
      const cls = target.constructor.name;
      if (!this.method.canWrap(target)) throw new PeftError('INVALID_CONFIG', `${config.peftType}: target module "${key}" is a ${cls}, which ${config.peftType} cannot wrap`);
      const replacement = this.method.inject({ target, targetName: key, adapterName: this.name, config, model });
      if (replacement !== target) model.setSubmodule(key, replacement);
      matched++;
    }
    if (!matched) {
      const names = targetableModules(model).map(([k]) => k.split('.').pop()!);
      throw new PeftError(
        'NO_TARGET_MODULES',
        `${config.peftType}: ${camelToSnake(fields.targetModules)} ${JSON.stringify(spec.targetModules)} matched no module of this ${model.config.modelType} model; its module names include ${[...new Set(names)].slice(0, 12).join(', ')}`,
      );
    }
  }

  setTrainable(): void {} // the tuner layers' own setAdapter does it

  remove(): void {}

  forward(): null {
    return null;
  }

  parameterKey(path: string): string | undefined {
    return path.startsWith('base_model.') ? this.method.parameterKey(path, this.name, this.host.config(this.name)) : undefined;
  }

  savedModuleKey(key: string): string {
    return key;
  }

  checkWritten(written: Map<string, tf.Variable>): void {
    const saved = new Set(written.values());
    const lost: string[] = [];
    for (const [layerPath, layer] of this.host.tunerLayers()) {
      for (const [path, p] of layer.namedParameters()) {
        // fusion layers belong to no adapter: a composed setup saves them in their own folder (composition.json)
        if (path.startsWith('base_layer.') || path.startsWith(`${FUSION_MODULE}.`) || !p.trainable || saved.has(p)) continue;
        const owner = layer.adapterOfParameter(path);
        if (owner === this.name || (owner === undefined && layer.peftType === this.method.peftType)) lost.push(`${layerPath}.${path}`);
      }
    }
    if (lost.length) {
      throw new PeftError(
        'INVALID_ARGUMENT',
        `savePretrained: adapter "${this.name}" (${this.method.peftType}) has trainable parameters its method's parameterKey does not claim, so they would not be written: ${lost.slice(0, 4).map((n) => `"${n}"`).join(', ')}${lost.length > 4 ? ` and ${lost.length - 4} more` : ''} (parameter names must follow the method's own rule, e.g. prefixedParameterKey's "${this.method.prefix}…<adapter>")`,
      );
    }
  }

  checkClaims(claimed: Map<string, tf.Variable>): void {
    const mine = new Set(claimed.values());
    for (const [layerPath, layer] of this.host.tunerLayers()) {
      for (const [path, p] of layer.namedParameters()) {
        const owner = path.startsWith('base_layer.') ? undefined : layer.adapterOfParameter(path);
        if (owner === undefined || owner === this.name || !mine.has(p)) continue;
        throw new PeftError(
          'INVALID_ARGUMENT',
          `${this.method.peftType}: parameterKey claims "${layerPath}.${path}" of adapter "${owner}" for adapter "${this.name}" (saving one adapter would write the other's tensors); a method's parameterKey must use the adapter name`,
        );
      }
    }
  }

  fileTensors(params: Record<string, tf.Tensor>): Record<string, tf.Tensor> {
    return this.method.toFileTensors ? this.method.toFileTensors(params, this.host.config(this.name)) : params;
  }

  async extraFiles(): Promise<void> {}

  async loadOwn({ file, path }: LoadContext): Promise<void> {
    this.method.checkFileTensors?.({ file, source: path, config: this.host.config(this.name), peft: this.host.peft, adapterName: this.name });
  }
}

class PromptLearningStrategy implements AdapterStrategy {
  readonly family = 'prompt-learning';
  readonly hasLayers = false;
  readonly exclusive = true;
  readonly mergeRefusal: string;

  constructor(private readonly host: StrategyHost, readonly name: string, readonly method: PromptLearningMethod<PeftConfig, Module>) {
    this.mergeRefusal = method.cannotMergeReason ?? 'prompt-learning methods add virtual tokens or past keys/values to the input; there is no weight to merge them into';
  }

  private get encoder(): Module {
    return this.host.encoders(true).get(this.name)!;
  }

  coexistsWith(other: PeftMethod): boolean {
    // injection adapters beside it (MAM: prefix + parallel adapter); other prompt-learning methods not
    return other.kind === 'injection' || other.peftType === this.method.peftType;
  }

  add(config: PeftConfig): void {
    this.host.encoders(true).set(this.name, this.method.createEncoder(this.host.model, config));
  }

  setTrainable(on: boolean): void {
    this.host.encoders()?.get(this.name)?.requiresGrad(on);
  }

  remove(): void {
    const enc = this.host.encoders();
    if (enc?.has(this.name)) enc.delete(this.name);
  }

  forward(inputs: ForwardInputs): ForwardOutput {
    return this.method.forward({ model: this.host.model, encoder: this.encoder, config: this.host.config(this.name), inputs });
  }

  parameterKey(): undefined {
    return undefined; // the file holds the encoder's output (fileTensors), not its parameters
  }

  savedModuleKey(key: string): string {
    return key.replace(/^base_model\.model\./, 'base_model.'); // HF's prompt-learning PeftModel has no tuner wrapper
  }

  checkWritten(): void {} // the encoder is written whole, as its output (and its state file)

  checkClaims(): void {} // modules_to_save copies only, which core names by adapter

  fileTensors(params: Record<string, tf.Tensor>): Record<string, tf.Tensor> {
    return { ...this.method.saveTensors(this.encoder, this.host.config(this.name)), ...params };
  }

  async extraFiles(files: Record<string, Uint8Array | string>, remove: string[]): Promise<void> {
    const state = this.method.saveEncoderState?.(this.encoder, this.host.config(this.name));
    if (!state) {
      remove.push(PROMPT_ENCODER_NAME); // a stale encoder from an earlier save
      return;
    }
    try {
      files[PROMPT_ENCODER_NAME] = await tensorsToSafetensors(state, { metadata: { format: 'pt', peftjs: 'prompt_encoder' } });
    } finally {
      tf.dispose(Object.values(state));
    }
  }

  async loadOwn({ file, path, view, fs, maxBytes, map, loaded }: LoadContext): Promise<void> {
    const config = this.host.config(this.name);
    const hf: Record<string, tf.Tensor> = {};
    for (const n of Object.keys(file.tensors)) if (!map.has(n)) loaded[n] = hf[n] = rawToTensor(n, file.tensors[n], path);
    const encPath = await view.path(PROMPT_ENCODER_NAME);
    let encoderState: Record<string, tf.Tensor> | undefined;
    if (!config.inferenceMode && encPath) {
      const enc = parseSafetensors(await readFileChecked(encPath, fs, maxBytes, 'maxBytes (the load budget)'), encPath);
      encoderState = {};
      for (const [n, raw] of Object.entries(enc.tensors)) loaded[`${PROMPT_ENCODER_NAME}:${n}`] = encoderState[n] = rawToTensor(n, raw, encPath);
    }
    await this.method.loadTensors(this.encoder, hf, config, path, encoderState);
  }
}

/** The strategy of adapter `name` of `method`: the one place that asks a method's kind. */
export function adapterStrategy(host: StrategyHost, name: string, method: PeftMethod): AdapterStrategy {
  return method.kind === 'injection' ? new InjectionStrategy(host, name, method) : new PromptLearningStrategy(host, name, method);
}
