import * as tf from '@tensorflow/tfjs';
import { Module, ModuleDict, type Layer, isLayer } from './nn/module';
import { PeftError } from './errors';
import { FUSION_MODULE, type CompositionBlock, type CompositionType } from './composition';

/**
 * The base of every layer a PEFT method puts in place of a target module. It keeps the wrapped
 * module as its `base_layer` child (HF's name), the adapters it holds by name, which are active,
 * whether adapters are disabled, and which are merged into the base weight.
 */
export abstract class BaseTunerLayer extends Module implements Layer {
  readonly isTunerLayer = true as const;
  /** HF peft_type of the method that owns this layer. */
  abstract readonly peftType: string;
  activeAdapters: string[] = [];
  disableAdapters = false;
  mergedAdapters: string[] = [];
  /**
   * The composition blocks this layer's forward runs through `composeLayer` (AdapterHub's supported_compositions);
   * empty: one adapter at a time, or HF's several active adapters. PeftModel.setActiveAdapters checks it.
   */
  readonly supportedCompositions: readonly CompositionType[] = [];
  /** The active composition block (PeftModel.setActiveAdapters), or null: the `activeAdapters` as HF runs them. */
  activeComposition: CompositionBlock | null = null;

  constructor(baseLayer: Module & Layer) {
    super();
    this.registerModule('base_layer', baseLayer);
  }

  get baseLayer(): Module & Layer {
    return this.child<Module & Layer>('base_layer');
  }

  /** The innermost wrapped module (a Linear, Conv1D, Embedding …), through nested tuner layers. */
  getBaseLayer(): Module & Layer {
    let m: Module & Layer = this.baseLayer;
    while (m instanceof BaseTunerLayer) m = m.baseLayer;
    return m;
  }

  abstract forward(x: tf.Tensor): tf.Tensor;
  /** Names of the adapters this layer holds. */
  abstract adapterNames(): string[];
  /** Adds `delta` of adapter `name` into the base weight (unchecked; `mergeOneChecked` is safe_merge). */
  protected abstract mergeOne(name: string, safeMerge: boolean): void;
  /**
   * safe_merge: computes the merged weight, checks it for NaN/Inf with an asynchronous read, and merges
   * only when it is finite. Layers without a check merge unchecked.
   */
  protected async mergeOneChecked(name: string): Promise<void> {
    this.mergeOne(name, false);
  }
  protected abstract unmergeOne(name: string): void;
  /** Removes and disposes one adapter's parameters. */
  protected abstract deleteOne(name: string): void;

  get merged(): boolean {
    return this.mergedAdapters.length > 0;
  }

  /**
   * HF's `module_type` in get_layer_status (the layer's repr up to its first parenthesis), e.g. `lora.Linear`.
   * By default `<peft type in lower case>.<wrapped class>`; a layer whose HF name differs overrides it.
   */
  get moduleType(): string {
    return `${this.peftType.toLowerCase()}.${this.getBaseLayer().constructor.name}`;
  }

  has(name: string): boolean {
    return this.adapterNames().includes(name);
  }

  /** Whether this layer holds the fusion layer `name` (`a,b,c`, under `adapter_fusion_layer`) that a Fuse block needs. */
  hasFusion(name: string): boolean {
    return this.maybeChild<ModuleDict>(FUSION_MODULE)?.has(name) ?? false;
  }

  /**
   * Merges the given (default: active) adapters into the base weights; already merged ones are skipped.
   * With safeMerge it returns a Promise (the finiteness check reads the merged weights asynchronously).
   */
  merge(names?: string[], safeMerge?: false): void;
  merge(names: string[] | undefined, safeMerge: true): Promise<void>;
  merge(names: string[] | undefined, safeMerge: boolean): void | Promise<void>;
  merge(names: string[] = this.activeAdapters, safeMerge = false): void | Promise<void> {
    if (safeMerge) return this.mergeSafely(names);
    for (const n of names) {
      if (!this.has(n) || this.mergedAdapters.includes(n)) continue;
      this.mergeOne(n, safeMerge);
      this.mergedAdapters.push(n);
    }
  }

  private async mergeSafely(names: string[]): Promise<void> {
    for (const n of names) {
      if (!this.has(n) || this.mergedAdapters.includes(n)) continue;
      await this.mergeOneChecked(n);
      this.mergedAdapters.push(n);
    }
  }

  unmerge(): void {
    while (this.mergedAdapters.length) this.unmergeOne(this.mergedAdapters.pop()!);
  }

  /** Makes `names` the active adapters; their parameters become trainable, the others frozen (HF's set_adapter). */
  setAdapter(names: string[], trainable = true): void {
    this.activeAdapters = names.filter((n) => this.has(n));
    for (const [path, p] of this.namedParameters()) {
      if (path.startsWith('base_layer.')) continue;
      const owner = this.adapterOfParameter(path);
      if (owner !== undefined) p.trainable = trainable && names.includes(owner);
    }
  }

  /** The adapter a parameter path (relative to this layer) belongs to: `lora_A.default.weight` → default. */
  adapterOfParameter(path: string): string | undefined {
    const parts = path.split('.');
    return this.adapterNames().find((n) => parts.includes(n));
  }

  deleteAdapter(name: string): void {
    if (this.mergedAdapters.includes(name)) {
      throw new PeftError('INVALID_ARGUMENT', `adapter "${name}" is merged into the base weights; unmerge before deleting it`);
    }
    this.deleteOne(name);
    this.activeAdapters = this.activeAdapters.filter((n) => n !== name);
  }

  /**
   * The base layer's output when no adapter math runs: adapters disabled (merged ones are unmerged
   * first, as HF does) or merged into the base weight. Null when the adapters must be applied.
   */
  protected bypass(x: tf.Tensor): tf.Tensor | null {
    if (this.disableAdapters) {
      if (this.merged) this.unmerge();
      return this.baseLayer.forward(x);
    }
    return this.merged ? this.baseLayer.forward(x) : null;
  }

  /**
   * For methods that swap one adapter's copy of a module in (LN tuning, BitFit): the one active adapter
   * this layer holds, undefined when none is, and an error naming `method` when several are active.
   */
  protected soleActiveAdapter(method: string): string | undefined {
    const active = this.activeAdapters.filter((n) => this.has(n));
    if (active.length > 1) {
      throw new PeftError('UNSUPPORTED', `${method} runs one adapter at a time, but ${active.length} are active here (${active.join(', ')}); call setAdapter with one name`);
    }
    return active[0];
  }
}

/**
 * safe_merge's check: resolves when `merged` (a layer's weight after a merge, not yet put in place) is all
 * finite, and otherwise throws naming the adapter — disposing `merged` first unless `opts.keep` (a tensor
 * the adapter still owns). `opts.what` names the base tensor in the message. One asynchronous read.
 */
export async function assertFiniteMerge(merged: tf.Tensor, method: string, adapterName: string, opts: { keep?: boolean; what?: string } = {}): Promise<void> {
  const bad = tf.tidy(() => tf.any(tf.logicalNot(tf.isFinite(merged))));
  let broken: boolean;
  try {
    broken = (await bad.data())[0] !== 0;
  } finally {
    bad.dispose();
  }
  if (broken) {
    if (!opts.keep) merged.dispose();
    throw new PeftError('INVALID_ARGUMENT', `merging ${method} adapter "${adapterName}" would put NaN or Inf into the ${opts.what ?? 'base weights'}; the adapter is broken`);
  }
}

export function isTunerLayer(m: unknown): m is BaseTunerLayer {
  return m instanceof BaseTunerLayer;
}

/**
 * HF's ModulesToSaveWrapper: a trainable copy per adapter of a module that is saved whole with the
 * adapter (a classification head). In memory `score.modules_to_save.<adapter>.weight`; on disk the
 * original path `score.weight`.
 */
export class ModulesToSaveWrapper extends Module implements Layer {
  activeAdapter: string | null = null;
  disableAdapters = false;
  constructor(original: Module & Layer) {
    super();
    this.registerModule('original_module', original);
    this.registerModule('modules_to_save', new ModuleDict());
  }
  get originalModule(): Module & Layer {
    return this.child<Module & Layer>('original_module');
  }
  get copies(): ModuleDict<Module & Layer> {
    return this.child<ModuleDict<Module & Layer>>('modules_to_save');
  }
  /** Adds a trainable copy of the original module for `name` (weights cloned). */
  addAdapter(name: string, make: (orig: Module & Layer) => Module & Layer): void {
    if (this.copies.has(name)) return;
    const copy = make(this.originalModule);
    copy.requiresGrad(true);
    this.copies.set(name, copy);
    this.activeAdapter ??= name;
  }
  setAdapter(name: string | null, trainable = true): void {
    this.activeAdapter = name && this.copies.has(name) ? name : null;
    for (const key of this.copies.keys()) this.copies.get(key)!.requiresGrad(trainable && key === this.activeAdapter);
  }
  forward(x: tf.Tensor): tf.Tensor {
    if (this.disableAdapters || !this.activeAdapter) return this.originalModule.forward(x);
    return this.copies.get(this.activeAdapter)!.forward(x);
  }
}

/**
 * Holds the base model as its child `model`, so parameter names read `base_model.model.…` inside a
 * PeftModel, exactly as HF's LoraModel / IA3Model do.
 */
export class TunerModel<M extends Module = Module> extends Module {
  constructor(model: M) {
    super();
    this.registerModule('model', model);
  }
  get model(): M {
    return this.child<M>('model');
  }
}

/** Module paths of a tree, not descending into tuner layers or modules-to-save wrappers. */
export function targetableModules(root: Module): [string, Module][] {
  const out: [string, Module][] = [];
  const walk = (m: Module, prefix: string) => {
    for (const [name, child] of m.children()) {
      const path = prefix ? `${prefix}.${name}` : name;
      out.push([path, child]);
      if (!(child instanceof BaseTunerLayer) && !(child instanceof ModulesToSaveWrapper)) walk(child, path);
    }
  };
  walk(root, '');
  return out;
}

export { isLayer };
