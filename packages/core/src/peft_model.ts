import * as tf from '@tensorflow/tfjs';
import { Module, ModuleDict, type Layer } from './nn/module';
import { PeftError } from './errors';
import { type PeftConfig, TaskType, configFromHfJson } from './config';
import { getPeftMethod } from './registry';
import type { PeftMethod, WeightedAdapterOptions } from './contract';
import { adapterStrategy, PROMPT_ENCODER_NAME, type AdapterStrategy, type StrategyHost } from './adapter_strategy';
import { type ForwardInputs, type ForwardOutput, type GenerateOptions, PreTrainedModel } from './model';
import { BaseTunerLayer, ModulesToSaveWrapper, TunerModel, targetableModules } from './tuner';
import { type FileSystem, getFileSystem, joinPath, readJson, stableJson } from './io/fs';
import { parseSafetensors, rawToTensor, tensorsToSafetensors } from './io/safetensors';
import { commitFiles, committedView, type CommittedView } from './io/commit';
import { readFileChecked, DEFAULT_MAX_LOAD_BYTES, insidePath } from './io/fs';
import { resolvePretrained, type HubOptions } from './io/hub';
import { isRecordingGradients } from './checkpoint';
import { SEQ_CLS_HEADS } from './heads';
import { compositionToString, type AdapterSetup, type CompositionBlock, type FuseBlock } from './composition';
import {
  activeListOf,
  applyComposition,
  effectiveComposition,
  finishComposedForward,
  freezeAllBut,
  hasComposition,
  loadComposed,
  replicateForParallel,
  resolveSetup,
  sameActiveList,
  saveCompositionFile,
} from './peft_composition';

export const CONFIG_NAME = 'adapter_config.json';
export const WEIGHTS_NAME = 'adapter_model.safetensors';
export { PROMPT_ENCODER_NAME };
/** Adapter names longer than this are refused (a name is a folder name on save). */
export const MAX_ADAPTER_NAME = 64;
const RESERVED_NAMES = new Set(Object.getOwnPropertyNames(Object.prototype));

/**
 * Throws INVALID_ARGUMENT unless `name` is a usable adapter name: 1 to 64 letters, digits, _ or -,
 * and not a name of Object.prototype (`__proto__`, `constructor`, `toString` …).
 */
export function checkAdapterName(name: unknown, where = 'adapter name'): asserts name is string {
  const shown = typeof name === 'string' ? JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name) : typeof name;
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_ADAPTER_NAME) {
    throw new PeftError('INVALID_ARGUMENT', `${where} ${shown} must be 1 to ${MAX_ADAPTER_NAME} characters`);
  }
  if (!/^[A-Za-z0-9_-]+$/.test(name)) {
    throw new PeftError('INVALID_ARGUMENT', `${where} ${shown} may only contain letters, digits, _ and -`);
  }
  if (RESERVED_NAMES.has(name)) throw new PeftError('INVALID_ARGUMENT', `${where} ${shown} is reserved (a name of Object.prototype); choose another`);
}

type PromptConfig = PeftConfig & { modulesToSave?: string[] | null };

function cloneLayer(m: Module & Layer): Module & Layer {
  // A structural copy: same class, parameters cloned (the head of a classifier, an embedding …).
  const copy = Object.create(Object.getPrototypeOf(m)) as Module & Layer;
  Object.assign(copy, m);
  (copy as any)._params = new Map();
  (copy as any)._modules = new Map();
  (copy as any)._buffers = new Map((m as any)._buffers);
  for (const [n, p] of m.ownParameters()) copy.registerParameter(n, p, true);
  for (const [n, c] of m.children()) copy.registerModule(n, cloneLayer(c as Module & Layer));
  return copy;
}

/**
 * A base model with one or more PEFT adapters: HF PEFT's PeftModel. Parameter names read
 * `base_model.model.<HF path>` so the adapter files are HF's.
 */
export class PeftModel extends Module {
  /** Configs by adapter name (a null-prototype object: no name reaches Object.prototype). */
  readonly peftConfig: Record<string, PeftConfig> = Object.create(null);
  private active: string[] = [];
  /** Each adapter's strategy, holding its method: resolved once, when the adapter is added. */
  private readonly strategies: Record<string, AdapterStrategy> = Object.create(null);
  private readonly host: StrategyHost;
  private adaptersDisabled = false;
  /** The active composition block (setActiveAdapters); null: the active adapters as HF runs them. */
  private composition: CompositionBlock | null = null;
  private unloaded = false;

  constructor(model: PreTrainedModel, config: PeftConfig, adapterName = 'default') {
    super();
    if (!(model instanceof PreTrainedModel)) {
      throw new PeftError('INVALID_ARGUMENT', 'getPeftModel: model must be a PreTrainedModel (load one with AutoModelForCausalLM.fromPretrained)');
    }
    this.registerModule('base_model', new TunerModel(model));
    this.host = this.strategyHost();
    model.requiresGrad(false);
    this.addAdapter(adapterName, config);
    this.setAdapter(adapterName);
  }

  /** What the adapters' strategies reach of this model. */
  private strategyHost(): StrategyHost {
    const peft = this;
    function encoders(create: true): ModuleDict;
    function encoders(create?: false): ModuleDict | undefined;
    function encoders(create = false): ModuleDict | undefined {
      return peft.maybeChild<ModuleDict>('prompt_encoder') ?? (create ? peft.registerModule('prompt_encoder', new ModuleDict()) : undefined);
    }
    return {
      peft,
      get model() {
        return peft.model;
      },
      config: (name) => peft.peftConfig[name],
      encoders,
      tunerLayers: () => [...peft.namedModules()].filter((e): e is [string, BaseTunerLayer] => e[1] instanceof BaseTunerLayer),
    };
  }

  /** The wrapped base model (with adapters injected). */
  get model(): PreTrainedModel {
    this.assertUsable();
    return this.child<TunerModel<PreTrainedModel>>('base_model').model;
  }

  get activeAdapters(): string[] {
    return [...this.active];
  }

  get activeAdapter(): string {
    return this.active[0];
  }

  private assertUsable(): void {
    if (this.unloaded) throw new PeftError('INVALID_ARGUMENT', 'this PeftModel was unloaded (mergeAndUnload/unload); use the model it returned');
  }

  private method(name: string): PeftMethod {
    return this.strategies[name].method;
  }

  private strategy(name: string): AdapterStrategy {
    return this.strategies[name];
  }

  private tunerLayers(): BaseTunerLayer[] {
    return [...this.namedModules()].map(([, m]) => m).filter((m): m is BaseTunerLayer => m instanceof BaseTunerLayer);
  }

  private saveWrappers(): ModulesToSaveWrapper[] {
    return [...this.namedModules()].map(([, m]) => m).filter((m): m is ModulesToSaveWrapper => m instanceof ModulesToSaveWrapper);
  }

  /** Adds an adapter (inactive until `setAdapter`). */
  addAdapter(adapterName: string, config: PeftConfig): void {
    this.assertUsable();
    checkAdapterName(adapterName);
    if (Object.hasOwn(this.peftConfig, adapterName)) throw new PeftError('INVALID_ARGUMENT', `an adapter named "${adapterName}" already exists`);
    const method = getPeftMethod(config.peftType);
    const strategy = adapterStrategy(this.host, adapterName, method);
    const clash = Object.values(this.strategies).find((s) => !s.coexistsWith(method) || !strategy.coexistsWith(s.method));
    if (clash) {
      const family = (strategy.exclusive ? strategy : clash).family;
      throw new PeftError('UNSUPPORTED', `cannot add ${config.peftType} adapter "${adapterName}": ${family} adapters cannot be mixed with other methods in one PeftModel`);
    }
    const model = this.model;
    let cfg = method.prepareConfig ? method.prepareConfig(config, model) : config;
    if (cfg.taskType === TaskType.SEQ_CLS && 'modulesToSave' in cfg) {
      const cur = (cfg as PromptConfig).modulesToSave ?? [];
      const merged = [...cur, ...SEQ_CLS_HEADS.filter((h) => !cur.includes(h))];
      cfg = cfg.with({ modulesToSave: merged });
    }
    strategy.add(cfg);
    this.addModulesToSave(cfg as PromptConfig, adapterName);
    this.peftConfig[adapterName] = cfg;
    this.strategies[adapterName] = strategy;
    try {
      // the method's declaration of its parameters, checked once they exist: each is one adapter's, under one key
      strategy.checkClaims(this.adapterTensorMap(adapterName));
    } catch (e) {
      this.deleteAdapter(adapterName);
      throw e;
    }
    if (this.active.length) this.setAdapter(this.active);
  }

  private addModulesToSave(config: PromptConfig, adapterName: string): void {
    const names = config.modulesToSave;
    if (!names?.length) return;
    const model = this.model;
    for (const [key, m] of targetableModules(model)) {
      if (!names.some((n) => key.endsWith(n))) continue;
      if (key.includes('.modules_to_save.') || key.endsWith('.original_module')) continue;
      let wrapper = m;
      if (!(m instanceof ModulesToSaveWrapper)) {
        wrapper = new ModulesToSaveWrapper(m as Module & Layer);
        model.setSubmodule(key, wrapper);
      }
      (wrapper as ModulesToSaveWrapper).addAdapter(adapterName, cloneLayer);
    }
  }

  /** Makes one adapter (or several, for methods that stack them) active and trainable. */
  setAdapter(names: string | string[]): void {
    this.assertUsable();
    const list = Array.isArray(names) ? names : [names];
    const reapplied = names === this.active;
    for (const n of list) if (!this.peftConfig[n]) throw new PeftError('INVALID_ARGUMENT', `no adapter named "${n}"; adapters: ${Object.keys(this.peftConfig).join(', ')}`);
    const exclusive = list.map((n) => this.strategy(n)).filter((s) => s.exclusive);
    if (exclusive.length > 1) throw new PeftError('UNSUPPORTED', `only one ${exclusive[0].family} adapter can be active at a time (${exclusive.map((e) => e.name).join(', ')})`);
    this.active = list;
    for (const layer of this.tunerLayers()) {
      layer.setAdapter(list, list.some((n) => !this.peftConfig[n].inferenceMode));
    }
    for (const w of this.saveWrappers()) {
      const n = list.find((a) => w.copies.has(a)) ?? null;
      w.setAdapter(n, n !== null && !this.peftConfig[n].inferenceMode);
    }
    for (const [n, s] of Object.entries(this.strategies)) s.setTrainable(list.includes(n) && !this.peftConfig[n].inferenceMode);
    // a composition stays while PeftModel re-applies its own list (this.active itself: an adapter added or loaded
    // beside it); any other call, a user's setAdapter included, ends it
    if (this.composition && !(reapplied && sameActiveList(this, list, this.composition))) this.composition = null;
    applyComposition(this, this.composition);
    if (this.adaptersDisabled) this.markAdapterLayersDisabled(); // layers injected since stay switched off
  }

  /** Runs `fn` with every adapter switched off and returns its result (HF's `with disable_adapter()`). */
  disableAdapter<T>(fn: () => T): T {
    this.assertUsable();
    const layers = this.tunerLayers();
    const wrappers = this.saveWrappers();
    const was = this.adaptersDisabled;
    const set = (on: boolean) => {
      this.adaptersDisabled = on;
      for (const l of layers) l.disableAdapters = on;
      for (const w of wrappers) w.disableAdapters = on;
    };
    set(true);
    let result: T;
    try {
      result = fn();
    } catch (e) {
      set(was);
      throw e;
    }
    if (result instanceof Promise) return result.finally(() => set(was)) as T;
    set(was);
    return result;
  }

  /**
   * Adds `adapterName` combining existing adapters with `weights` (HF's add_weighted_adapter; LoRA: the
   * combination types of WeightedAdapterOptions, default `svd`). The new adapter is inactive and frozen.
   */
  async addWeightedAdapter(adapters: string[], weights: number[], adapterName: string, options: WeightedAdapterOptions = {}): Promise<void> {
    this.assertUsable();
    checkAdapterName(adapterName);
    const first = Array.isArray(adapters) && typeof adapters[0] === 'string' && Object.hasOwn(this.peftConfig, adapters[0]) ? this.strategy(adapters[0]) : undefined;
    if (!first) throw new PeftError('INVALID_ARGUMENT', `addWeightedAdapter: "adapters" must name existing adapters; adapters: ${Object.keys(this.peftConfig).join(', ')}`);
    if (!first.addWeightedAdapter) throw new PeftError('UNSUPPORTED', `addWeightedAdapter: ${first.method.peftType} adapters cannot be combined`);
    await first.addWeightedAdapter({ peft: this, adapters, weights, adapterName, options });
  }

  /**
   * Runs `fn` with per-sample adapters (HF's adapter_names=): row i of the batch uses adapter names[i],
   * `'__base__'` none. Every tuner layer holding a named adapter must support it (LoRA's do).
   */
  private withPerSampleAdapters<T>(names: unknown, rows: number | undefined, fn: () => T): T {
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw new PeftError('INVALID_ARGUMENT', 'adapterNames must be a list of adapter names, one per row (\'__base__\' for none)');
    if (rows !== undefined && names.length !== rows) throw new PeftError('INVALID_ARGUMENT', `adapterNames has ${names.length} names for a batch of ${rows} rows`);
    const unknown = [...new Set(names)].filter((n) => n !== '__base__' && !Object.hasOwn(this.peftConfig, n));
    if (unknown.length) throw new PeftError('INVALID_ARGUMENT', `adapterNames: no adapter named ${unknown.map((n) => `"${n}"`).join(', ')}; adapters: ${Object.keys(this.peftConfig).join(', ')}`);
    const used = names.filter((n) => n !== '__base__');
    const layerless = used.map((n) => this.strategy(n)).find((s) => !s.hasLayers);
    if (layerless) throw new PeftError('UNSUPPORTED', `adapterNames: per-sample adapters are not supported for ${layerless.family} adapters`);
    type PerSample = BaseTunerLayer & { perSampleAdapters: string[] | null };
    const layers = this.tunerLayers();
    if (layers.some((l) => l.merged)) throw new PeftError('INVALID_ARGUMENT', 'adapterNames cannot be used while adapters are merged into the base weights; unmerge first');
    // a checkpointed layer recomputes its forward in backward, after the names are gone: refused rather than wrong
    if (isRecordingGradients() && this.model.isGradientCheckpointing) throw new PeftError('UNSUPPORTED', 'adapterNames cannot be used in a training forward with gradient checkpointing on');
    for (const l of layers) {
      if (!('perSampleAdapters' in l) && used.some((n) => l.has(n))) throw new PeftError('UNSUPPORTED', `adapterNames: ${l.peftType} layers do not support per-sample adapters`);
    }
    if (this.saveWrappers().some((w) => used.some((n) => w.copies.has(n)))) throw new PeftError('UNSUPPORTED', 'adapterNames: adapters with modules_to_save do not support per-sample adapters');
    const set = (v: string[] | null) => {
      for (const l of layers) if ('perSampleAdapters' in l) (l as PerSample).perSampleAdapters = v;
    };
    set(names);
    try {
      return fn();
    } finally {
      set(null);
    }
  }

  /** The forward of the base model with the active adapters, or with `adapterNames` one adapter per row. */
  forward(inputs: ForwardInputs & { adapterNames?: string[] }): ForwardOutput {
    if (inputs.adapterNames !== undefined) {
      const { adapterNames, ...rest } = inputs;
      const ids = rest.inputIds ?? rest.inputsEmbeds;
      return this.withPerSampleAdapters(adapterNames, ids instanceof tf.Tensor ? ids.shape[0] : ids?.length, () => this.forward(rest));
    }
    let made: tf.Tensor[] = [];
    if (this.composition && !this.adaptersDisabled) ({ inputs, made } = replicateForParallel(inputs, this.composition));
    const model = this.model;
    // a prompt-learning adapter runs the forward (its injection neighbours act inside it, MAM); else the base's
    const name = this.active.find((n) => !this.strategy(n).hasLayers) ?? this.active[0];
    const out = (name !== undefined && !this.adaptersDisabled ? this.strategy(name).forward(inputs) : null) ?? model.forward(inputs);
    const terms = Object.entries(this.peftConfig).filter(([n, c]) => !c.inferenceMode && this.strategy(n).lossTerm);
    if (out.loss && terms.length) {
      // methods' loss terms (AdaLoRA's orthogonal regulariser) for the adapters being trained
      const loss = out.loss;
      out.loss = tf.tidy(() => {
        let l: tf.Scalar = loss;
        for (const [n] of terms) {
          const term = this.strategy(n).lossTerm!(this);
          if (term) l = tf.add(l, term) as tf.Scalar;
        }
        return l;
      });
      if (out.loss !== loss && !isRecordingGradients()) loss.dispose();
    }
    return this.composition ? finishComposedForward(this, out, made) : out;
  }

  /**
   * Runs the methods' post-update work that needs the step's gradients (AdaLoRA's update_and_allocate) for
   * every trained adapter; the Trainer calls it after each optimizer step, a custom loop calls it the same
   * way (`step` from 0, `grads` by this model's parameter names). See PeftMethod.afterOptimizerStep.
   */
  async afterOptimizerStep(step: number, grads: Record<string, tf.Tensor>, opts: { apply?: tf.Scalar } = {}): Promise<void> {
    this.assertUsable();
    for (const [n, config] of Object.entries(this.peftConfig)) {
      const hook = config.inferenceMode ? undefined : this.strategy(n).afterOptimizerStep;
      if (hook) await hook({ peft: this, step, grads, apply: opts.apply });
    }
  }

  /** Generation with the active adapters (virtual tokens and prefixes included), or `adapterNames` one per row. */
  generate(opts: GenerateOptions & { adapterNames?: string[] }): Promise<number[][]> {
    const { adapterNames, ...rest } = opts;
    return this.model.generate(rest, (inputs) => this.forward(adapterNames === undefined ? inputs : { ...inputs, adapterNames }));
  }

  private assertMergeable(names: string[]): void {
    // merged weights hold the sum of the adapters' deltas: not what a composition block computes
    if (this.composition) throw new PeftError('UNSUPPORTED', `cannot merge while the composition ${compositionToString(this.composition)} is active: merged weights would sum the adapters instead; activate adapters with setAdapter first`);
    for (const n of names) {
      const s = this.strategy(n);
      if (s.mergeRefusal !== undefined) throw new PeftError('UNSUPPORTED', `adapter "${n}" (${s.method.peftType}) cannot be merged: ${s.mergeRefusal}`);
    }
  }

  /**
   * Adds the adapters' updates into the base weights (forward then skips the adapter math). With
   * `safeMerge` (HF's safe_merge: each merged weight is checked for NaN/Inf before it replaces the base
   * weight) it returns a Promise, as the check reads the weights asynchronously.
   */
  mergeAdapter(adapterNames?: string[], opts?: { safeMerge?: false }): void;
  mergeAdapter(adapterNames: string[] | undefined, opts: { safeMerge: true }): Promise<void>;
  mergeAdapter(adapterNames: string[] | undefined, opts: { safeMerge?: boolean }): void | Promise<void>;
  mergeAdapter(adapterNames: string[] = this.active, opts: { safeMerge?: boolean } = {}): void | Promise<void> {
    this.assertUsable();
    this.assertMergeable(adapterNames);
    if (opts.safeMerge) {
      return (async () => {
        for (const l of this.tunerLayers()) await l.merge(adapterNames, true);
      })();
    }
    for (const l of this.tunerLayers()) l.merge(adapterNames, false);
  }

  unmergeAdapter(): void {
    this.assertUsable();
    for (const l of this.tunerLayers()) l.unmerge();
  }

  private unloadLayers(merge: boolean, adapterNames: string[], safeMerge: boolean): PreTrainedModel {
    this.assertUsable();
    if (merge) this.assertMergeable(adapterNames);
    const model = this.model;
    const replaceAll = () => {
      for (const [key, m] of targetableModules(model)) {
        if (m instanceof BaseTunerLayer) {
          if (merge) m.merge(adapterNames, false);
          else m.unmerge();
          const base = m.getBaseLayer();
          // dispose adapter parameters, keep the base layer's
          const keep = new Set(base.parameters());
          for (const p of m.parameters()) if (!keep.has(p)) p.dispose();
          (m as { disposeBuffers?: () => void }).disposeBuffers?.(); // tensors a layer keeps beside its parameters (DoRA's merged norms)
          model.setSubmodule(key, base);
        } else if (m instanceof ModulesToSaveWrapper) {
          const active = m.activeAdapter;
          const keepCopy = merge && active ? m.copies.get(active)! : m.originalModule;
          const keep = new Set(keepCopy.parameters());
          for (const p of m.parameters()) if (!keep.has(p)) p.dispose();
          model.setSubmodule(key, keepCopy);
        }
      }
    };
    replaceAll();
    for (const s of Object.values(this.strategies)) s.remove();
    // as HF: the returned model keeps its parameters' trainable flags (frozen); call requiresGrad(true) to train it whole
    this.unloaded = true;
    return model;
  }

  /** Merges the adapters into the base weights and returns the plain base model (a Promise of it with `safeMerge`, see mergeAdapter). */
  mergeAndUnload(opts?: { adapterNames?: string[]; safeMerge?: false }): PreTrainedModel;
  mergeAndUnload(opts: { adapterNames?: string[]; safeMerge: true }): Promise<PreTrainedModel>;
  mergeAndUnload(opts: { adapterNames?: string[]; safeMerge?: boolean }): PreTrainedModel | Promise<PreTrainedModel>;
  mergeAndUnload(opts: { adapterNames?: string[]; safeMerge?: boolean } = {}): PreTrainedModel | Promise<PreTrainedModel> {
    const names = opts.adapterNames ?? this.active;
    if (opts.safeMerge) {
      // check-and-merge every layer first; the unload then finds them merged
      return this.mergeAdapter(names, { safeMerge: true }).then(() => this.unloadLayers(true, names, false));
    }
    return this.unloadLayers(true, names, false);
  }

  /** Removes every adapter without merging (merged ones are unmerged first) and returns the base model. */
  unload(): PreTrainedModel {
    return this.unloadLayers(false, [], false);
  }

  deleteAdapter(name: string): void {
    this.assertUsable();
    if (typeof name !== 'string' || !Object.hasOwn(this.peftConfig, name)) throw new PeftError('INVALID_ARGUMENT', `no adapter named "${name}"`);
    for (const l of this.tunerLayers()) if (l.has(name)) l.deleteAdapter(name);
    for (const w of this.saveWrappers()) if (w.copies.has(name)) w.copies.delete(name);
    this.strategy(name).remove();
    delete this.peftConfig[name];
    delete this.strategies[name];
    const remaining = this.active.filter((n) => n !== name);
    if (this.composition && remaining.length === this.active.length) {
      this.setAdapter(this.active); // an adapter outside the active composition: the composition stays
      return;
    }
    const next = remaining.length ? remaining : Object.keys(this.peftConfig).slice(0, 1);
    this.active = [];
    if (next.length) this.setAdapter(next);
  }

  /** [trainable, all] parameter counts (a shared parameter counted once). */
  getNbTrainableParameters(): [number, number] {
    let trainable = 0;
    let all = 0;
    for (const [, p] of this.namedParameters()) {
      all += p.size;
      if (p.trainable) trainable += p.size;
    }
    // weights a module holds outside its parameters (a 4-bit Linear's packed codes) count at their
    // logical size, as HF counts bitsandbytes' Params4bit (numel · 2)
    for (const [, m] of this.namedModules()) all += (m as { packedWeightCount?: () => number }).packedWeightCount?.() ?? 0;
    return [trainable, all];
  }

  /** Prints HF's line: `trainable params: 8,192 || all params: … || trainable%: 0.1234`. */
  printTrainableParameters(log: (s: string) => void = console.log): string {
    const [t, a] = this.getNbTrainableParameters();
    const line = `trainable params: ${t.toLocaleString('en-US')} || all params: ${a.toLocaleString('en-US')} || trainable%: ${((100 * t) / a).toFixed(4)}`;
    log(line);
    return line;
  }

  /**
   * The adapter's parameters by the key HF saves them under. The same map serves saving and
   * loading, so the two can never disagree.
   */
  adapterTensorMap(adapterName: string): Map<string, tf.Variable> {
    const config = this.peftConfig[adapterName];
    if (!config) throw new PeftError('INVALID_ARGUMENT', `no adapter named "${adapterName}"`);
    const strategy = this.strategy(adapterName);
    const out = new Map<string, tf.Variable>();
    const saveMarker = `.modules_to_save.${adapterName}.`;
    for (const [k, v] of this.namedParameters()) {
      // modules_to_save copies are core's; every other parameter is the method's to claim
      const key = k.includes(saveMarker) ? strategy.savedModuleKey(k.replace(saveMarker, '.')) : strategy.parameterKey(k);
      if (key === undefined) continue;
      const before = out.get(key);
      if (before && before !== v) {
        const other = [...this.namedParameters()].find(([, p]) => p === before)![0];
        throw new PeftError('INVALID_ARGUMENT', `${config.peftType} adapter "${adapterName}": parameters "${other}" and "${k}" get the same file key "${key}" from the method's parameterKey; one would overwrite the other`);
      }
      out.set(key, v);
    }
    return out;
  }

  /** The adapter's tensors as HF saves them (copies; the caller disposes them). */
  adapterStateDict(adapterName = this.activeAdapter): Record<string, tf.Tensor> {
    const map = this.adapterTensorMap(adapterName);
    const strategy = this.strategy(adapterName);
    strategy.checkWritten(map);
    const params: Record<string, tf.Tensor> = {};
    for (const [k, v] of map) params[k] = v.clone();
    return strategy.fileTensors(params);
  }

  /**
   * Writes `adapter_config.json` and `adapter_model.safetensors` as HF PEFT does: the default adapter in
   * `dir`, others in `dir/<name>/`. Each adapter's files are committed all-or-nothing (io/commit.ts): a
   * process killed mid-save leaves the old adapter or the new one, never new weights beside an old
   * config; leftovers of an interrupted save are finished or removed by the next one.
   */
  async savePretrained(dir: string, opts: { selectedAdapters?: string[]; fs?: FileSystem } = {}): Promise<void> {
    this.assertUsable();
    const fs = opts.fs ?? getFileSystem();
    const names = opts.selectedAdapters ?? Object.keys(this.peftConfig);
    for (const name of names) {
      checkAdapterName(name, 'savePretrained: selectedAdapters entry');
      if (!Object.hasOwn(this.peftConfig, name)) throw new PeftError('INVALID_ARGUMENT', `no adapter named "${name}"`);
    }
    for (const name of names) {
      const config = this.peftConfig[name];
      const out = name === 'default' ? dir : joinPath(dir, name);
      const files: Record<string, Uint8Array | string> = {};
      const remove: string[] = [];
      const tensors = this.adapterStateDict(name);
      try {
        // integer tensors (diff pruning's indices) as I32: PyTorch indexes with int32 as with int64, at half the bytes
        files[WEIGHTS_NAME] = await tensorsToSafetensors(tensors, { metadata: { format: 'pt' }, intDtype: 'I32' });
      } finally {
        tf.dispose(Object.values(tensors));
      }
      await this.strategy(name).extraFiles(files, remove);
      files[CONFIG_NAME] = stableJson({ ...config.toJSON(), inference_mode: true });
      await commitFiles(fs, out, files, remove);
    }
    await saveCompositionFile(this, this.composition, dir, names, fs, opts.selectedAdapters === undefined, (d, f, r) => commitFiles(fs, d, f, r));
  }

  /** Loads an adapter saved by HF PEFT or peftjs into this model under `adapterName`. */
  async loadAdapter(dir: string, adapterName: string, opts: { isTrainable?: boolean; fs?: FileSystem; maxBytes?: number; subfolder?: string } & HubOptions = {}): Promise<void> {
    // a hub id as in fromPretrained; with a subfolder, dir is taken as it is
    const resolved = opts.subfolder === undefined ? await resolvePretrained(dir, 'adapter', opts) : { dir, fs: opts.fs ?? getFileSystem() };
    const fs = resolved.fs;
    dir = resolved.dir;
    // HF's subfolder: an adapter saved beside others (savePretrained writes dir/<name>); never outside dir
    if (opts.subfolder !== undefined) dir = insidePath(dir, opts.subfolder, 'loadAdapter: subfolder');
    checkAdapterName(adapterName);
    if (Object.hasOwn(this.peftConfig, adapterName)) throw new PeftError('INVALID_ARGUMENT', `an adapter named "${adapterName}" already exists`);
    const view = await committedView(fs, dir);
    const config = await readAdapterConfig(dir, fs, opts.isTrainable ?? false, view);
    this.addAdapter(adapterName, config);
    try {
      await this.loadAdapterWeights(dir, adapterName, fs, view, opts.maxBytes);
    } catch (e) {
      this.deleteAdapter(adapterName);
      throw e;
    }
    if (!this.active.length) this.setAdapter(adapterName);
    else this.setAdapter(this.active);
  }

  private async loadAdapterWeights(dir: string, adapterName: string, fs: FileSystem, view: CommittedView, maxBytes = DEFAULT_MAX_LOAD_BYTES): Promise<void> {
    const path = (await view.path(WEIGHTS_NAME)) ?? joinPath(dir, WEIGHTS_NAME);
    const file = parseSafetensors(await readFileChecked(path, fs, maxBytes, 'maxBytes (the load budget)'), path);
    const names = Object.keys(file.tensors);
    const config = this.peftConfig[adapterName];
    const map = this.adapterTensorMap(adapterName);
    const loaded: Record<string, tf.Tensor> = {};
    try {
      await this.strategy(adapterName).loadOwn({ file, path, view, fs, maxBytes, map, loaded });
      const unexpected = names.filter((n) => !map.has(n) && !(n in loaded));
      if (unexpected.length) {
        throw new PeftError('INVALID_FILE', `${path}: tensors ${unexpected.slice(0, 4).map((n) => `"${n}"`).join(', ')}${unexpected.length > 4 ? ` and ${unexpected.length - 4} more` : ''} do not belong to this model's ${config.peftType} adapter (an adapter for another model?)`);
      }
      const missing = [...map.keys()].filter((k) => !file.tensors[k]);
      if (missing.length) {
        throw new PeftError('INVALID_FILE', `${path}: missing tensors ${missing.slice(0, 4).map((n) => `"${n}"`).join(', ')}${missing.length > 4 ? ` and ${missing.length - 4} more` : ''}`);
      }
      for (const [key, variable] of map) {
        const raw = file.tensors[key];
        if (!tf.util.arraysEqual(raw.shape, variable.shape)) {
          throw new PeftError('SHAPE_MISMATCH', `${path}: tensor "${key}" has shape [${raw.shape}] but this model needs [${variable.shape}] (an adapter for a model of another size?)`);
        }
      }
      for (const [key, variable] of map) {
        const t = rawToTensor(key, file.tensors[key], path);
        variable.assign(t.dtype === variable.dtype ? t : t.cast(variable.dtype));
        t.dispose();
      }
    } finally {
      tf.dispose(Object.values(loaded));
    }
  }

  /** Loads a saved adapter onto `model`; the method is found from `peft_type`. */
  static async fromPretrained(
    model: PreTrainedModel,
    dir: string,
    opts: { adapterName?: string; isTrainable?: boolean; fs?: FileSystem; maxBytes?: number } & HubOptions = {},
  ): Promise<PeftModel> {
    // a folder, a URL, or a hub id (`org/name`) read from the HF cache (downloaded into it when online)
    const resolved = await resolvePretrained(dir, 'adapter', opts);
    const fs = resolved.fs;
    dir = resolved.dir;
    if (opts.adapterName === undefined && (await hasComposition(dir, fs))) {
      return loadComposed(dir, fs, (name, sub) => PeftModel.fromPretrained(model, sub, { ...opts, adapterName: name }), opts);
    }
    const adapterName = opts.adapterName ?? 'default';
    checkAdapterName(adapterName);
    const view = await committedView(fs, dir);
    const config = await readAdapterConfig(dir, fs, opts.isTrainable ?? false, view);
    const peft = new PeftModel(model, config, adapterName);
    try {
      await peft.loadAdapterWeights(dir, adapterName, fs, view, opts.maxBytes);
    } catch (e) {
      peft.unload();
      throw e;
    }
    peft.setAdapter(adapterName);
    if (!opts.isTrainable) peft.eval();
    return peft;
  }

  // ——— HF PeftModel's adapter-layer switches, status and requires_grad (enable/disable_adapter_layers,
  // get_layer_status, get_model_status, set_requires_grad) ———

  /**
   * HF's enable_adapter_layers: undoes disableAdapterLayers (a lasting switch): the adapters run again and the
   * active ones' parameters are trainable again (unless their config is inferenceMode).
   */
  enableAdapterLayers(): void {
    this.assertUsable();
    this.adaptersDisabled = false;
    for (const l of this.tunerLayers()) l.disableAdapters = false;
    for (const w of this.saveWrappers()) w.disableAdapters = false;
    if (this.active.length) this.setAdapter(this.active);
  }

  /**
   * HF's disable_adapter_layers: a lasting switch, until enableAdapterLayers: forward and generate run the base
   * model (adapters merged into the weights are unmerged first, as HF does), and every adapter parameter is
   * frozen. `disableAdapter(fn)` inside it leaves it disabled.
   */
  disableAdapterLayers(): void {
    this.assertUsable();
    this.markAdapterLayersDisabled();
    for (const l of this.tunerLayers()) {
      if (l.merged) l.unmerge();
      for (const [path, p] of l.namedParameters()) if (!path.startsWith('base_layer.')) p.trainable = false;
    }
    for (const w of this.saveWrappers()) w.copies.requiresGrad(false);
    for (const s of Object.values(this.strategies)) s.setTrainable(false);
  }

  private markAdapterLayersDisabled(): void {
    this.adaptersDisabled = true;
    for (const l of this.tunerLayers()) l.disableAdapters = true;
    for (const w of this.saveWrappers()) w.disableAdapters = true;
  }

  /** Whether the adapters are switched off (disableAdapterLayers, or inside disableAdapter(fn)). */
  get adapterLayersDisabled(): boolean {
    return this.adaptersDisabled;
  }

  /**
   * HF's set_requires_grad: makes the parameters of the named adapters trainable (or frozen), whichever adapter
   * is active; the other adapters are left as they are. Not for prompt learning, as in HF.
   */
  setRequiresGrad(adapterNames: string | string[], requiresGrad = true): void {
    this.assertUsable();
    const names = typeof adapterNames === 'string' ? [adapterNames] : adapterNames;
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw new PeftError('INVALID_ARGUMENT', 'setRequiresGrad: adapterNames must be an adapter name or a list of them');
    const unknown = names.filter((n) => !Object.hasOwn(this.peftConfig, n));
    if (unknown.length) throw new PeftError('INVALID_ARGUMENT', `setRequiresGrad: no adapter named ${unknown.map((n) => `"${n}"`).join(', ')}; adapters: ${Object.keys(this.peftConfig).join(', ')}`);
    if (typeof requiresGrad !== 'boolean') throw new PeftError('INVALID_ARGUMENT', 'setRequiresGrad: requiresGrad must be true or false');
    const layerless = names.find((n) => !this.strategy(n).hasLayers);
    if (layerless) throw new PeftError('UNSUPPORTED', `setRequiresGrad is not supported for ${this.strategy(layerless).family} adapters (adapter "${layerless}" is ${this.peftConfig[layerless].peftType}), as in HF`);
    for (const l of this.tunerLayers()) {
      for (const [path, p] of l.namedParameters()) {
        if (path.startsWith('base_layer.')) continue;
        const owner = l.adapterOfParameter(path);
        if (owner !== undefined && names.includes(owner)) p.trainable = requiresGrad;
      }
    }
    for (const w of this.saveWrappers()) for (const n of names) w.copies.get(n)?.requiresGrad(requiresGrad);
  }

  // ——— AdapterHub's composition (composition.ts, peft_composition.ts) ———

  /** The active composition block, or null when adapters are active by name (setAdapter). */
  get activeComposition(): CompositionBlock | null {
    return this.composition;
  }

  /**
   * AdapterHub's set_active_adapters: a name, a list (a Stack) or a block (Stack, Parallel, Average, BatchSplit,
   * Fuse) becomes the active setup. Its adapters become active (trainable unless inferenceMode, as setAdapter).
   * Checked: names exist, nesting as AdapterHub's, each layer supports the blocks reaching it.
   */
  setActiveAdapters(setup: AdapterSetup | string[]): void {
    this.assertUsable();
    const block = resolveSetup(this, setup);
    const previous = { active: this.active, composition: this.composition };
    this.composition = effectiveComposition(block);
    this.active = activeListOf(this, block);
    try {
      this.setAdapter(this.active);
    } catch (e) {
      Object.assign(this, previous);
      throw e;
    }
  }

  /**
   * AdapterHub's train_adapter: activates `setup`, puts the model in training mode and freezes every parameter
   * except those of the setup's adapters (the base, other adapters and fusion layers stay frozen).
   */
  trainAdapter(setup: AdapterSetup | string[]): void {
    this.setActiveAdapters(setup);
    this.train();
    freezeAllBut(this, resolveSetup(this, setup), { adapters: true, fusion: false });
  }

  /**
   * AdapterHub's train_adapter_fusion: activates `setup` (a Fuse, or a block holding one) and freezes everything
   * but its fusion layers (the fused adapters too, unless `unfreezeAdapters`).
   */
  trainAdapterFusion(setup: FuseBlock | AdapterSetup, opts: { unfreezeAdapters?: boolean } = {}): void {
    this.setActiveAdapters(setup);
    this.train();
    freezeAllBut(this, resolveSetup(this, setup), { adapters: opts.unfreezeAdapters ?? false, fusion: true });
  }

  /**
   * HF's get_layer_status: one entry per adapter layer (tuner layers and modules-to-save wrappers), with HF's
   * field names. `name` is the path under base_model as HF prints it (`model.model.layers.0.self_attn.q_proj`),
   * `module_type` the layer's `moduleType` (`lora.Linear`), `devices` the tfjs backend holding the tensors.
   */
  getLayerStatus(): TunerLayerStatus[] {
    this.assertUsable();
    const layerless = Object.keys(this.peftConfig).find((n) => !this.strategy(n).hasLayers);
    if (layerless) throw new PeftError('UNSUPPORTED', `getLayerStatus: ${this.strategy(layerless).family} adapters ("${layerless}", ${this.peftConfig[layerless].peftType}) have no adapter layers, as in HF`);
    const backend = tf.getBackend();
    const grads = (groups: Map<string, boolean[]>) => {
      const out: Record<string, boolean | 'irregular'> = {};
      for (const [k, v] of groups) out[k] = v.every(Boolean) ? true : v.some(Boolean) ? 'irregular' : false;
      return out;
    };
    const status: TunerLayerStatus[] = [];
    for (const [name, m] of this.child('base_model').namedModules()) {
      if (m instanceof BaseTunerLayer) {
        const groups = new Map<string, boolean[]>(m.adapterNames().map((n) => [n, []]));
        for (const [path, p] of m.namedParameters()) {
          if (path.startsWith('base_layer.')) continue;
          const owner = m.adapterOfParameter(path);
          if (owner !== undefined) groups.get(owner)?.push(p.trainable);
        }
        const base = m.getBaseLayer() as unknown as { quantizationBackend?: unknown };
        status.push({
          name,
          module_type: m.moduleType,
          enabled: !m.disableAdapters,
          active_adapters: [...m.activeAdapters],
          merged_adapters: [...m.mergedAdapters],
          requires_grad: grads(groups),
          available_adapters: [...m.adapterNames()].sort(),
          devices: Object.fromEntries(m.adapterNames().map((n) => [n, [backend]])),
          quantization_backend: typeof base.quantizationBackend === 'string' ? base.quantizationBackend : null,
        });
      } else if (m instanceof ModulesToSaveWrapper) {
        const keys = m.copies.keys();
        const groups = new Map<string, boolean[]>(keys.map((k) => [k, m.copies.get(k)!.parameters().map((p) => p.trainable)]));
        status.push({
          name,
          module_type: 'ModulesToSaveWrapper',
          enabled: !m.disableAdapters,
          active_adapters: m.activeAdapter ? [m.activeAdapter] : [],
          merged_adapters: [],
          requires_grad: grads(groups),
          available_adapters: [...keys].sort(),
          devices: Object.fromEntries(keys.map((k) => [k, [backend]])),
          quantization_backend: null,
        });
      }
    }
    if (!status.length) throw new PeftError('INVALID_ARGUMENT', 'getLayerStatus: no adapter layers found in the model');
    return status;
  }

  /**
   * HF's get_model_status: the layers' status summed up, with HF's field names; a field on which the layers
   * disagree is `'irregular'` (an inconsistent model). `adapter_model_type` is peftjs's `TunerModel` (one class
   * for every injection method, where HF has LoraModel, IA3Model …).
   */
  getModelStatus(): TunerModelStatus {
    const layers = this.getLayerStatus();
    const [trainable, total] = this.getNbTrainableParameters();
    const same = <T>(vals: T[], key: (v: T) => string): T | 'irregular' => (new Set(vals.map(key)).size === 1 ? vals[0] : 'irregular');
    const enabled = same(layers.map((s) => s.enabled), String);
    const activeAdapters = same(layers.map((s) => s.active_adapters), (v) => JSON.stringify(v));
    const mergedAll = new Set(layers.flatMap((s) => s.merged_adapters));
    const irregularMerge = layers.some((s) => s.available_adapters.some((a) => mergedAll.has(a) && !s.merged_adapters.includes(a)));
    const requiresGrad: Record<string, boolean | 'irregular'> = {};
    const devices: Record<string, string[]> = {};
    for (const s of layers) {
      for (const [k, v] of Object.entries(s.requires_grad)) requiresGrad[k] = k in requiresGrad && requiresGrad[k] !== v ? 'irregular' : v;
      for (const [k, v] of Object.entries(s.devices)) devices[k] = [...new Set([...(devices[k] ?? []), ...v])].sort();
    }
    const quant = same(layers.map((s) => s.quantization_backend), String);
    return {
      base_model_type: this.model.constructor.name,
      adapter_model_type: this.child('base_model').constructor.name,
      peft_types: Object.fromEntries(Object.entries(this.peftConfig).map(([n, c]) => [n, c.peftType])),
      trainable_params: trainable,
      total_params: total,
      num_adapter_layers: layers.length,
      enabled,
      active_adapters: activeAdapters === 'irregular' ? activeAdapters : [...activeAdapters],
      merged_adapters: irregularMerge ? 'irregular' : [...mergedAll].sort(),
      requires_grad: requiresGrad,
      available_adapters: [...new Set(layers.flatMap((s) => s.available_adapters))].sort(),
      devices,
      quantization_backend: quant,
    };
  }
}

/** HF's TunerLayerStatus (its field names): the state of one adapter layer, from PeftModel.getLayerStatus. */
export interface TunerLayerStatus {
  name: string;
  module_type: string;
  enabled: boolean;
  active_adapters: string[];
  merged_adapters: string[];
  /** Per adapter: whether its parameters here train; `'irregular'` when some do and some do not. */
  requires_grad: Record<string, boolean | 'irregular'>;
  available_adapters: string[];
  devices: Record<string, string[]>;
  quantization_backend: string | null;
}

/** HF's TunerModelStatus (its field names), from PeftModel.getModelStatus; `'irregular'` where the layers disagree. */
export interface TunerModelStatus {
  base_model_type: string;
  adapter_model_type: string;
  peft_types: Record<string, string>;
  trainable_params: number;
  total_params: number;
  num_adapter_layers: number;
  enabled: boolean | 'irregular';
  active_adapters: string[] | 'irregular';
  merged_adapters: string[] | 'irregular';
  requires_grad: Record<string, boolean | 'irregular'>;
  available_adapters: string[];
  devices: Record<string, string[]>;
  quantization_backend: string | null | 'irregular';
}

/** Reads and validates `adapter_config.json`; `inferenceMode` follows `isTrainable`. */
export async function readAdapterConfig(dir: string, fs: FileSystem = getFileSystem(), isTrainable = false, view?: CommittedView): Promise<PeftConfig> {
  const path = await (view ?? (await committedView(fs, dir))).path(CONFIG_NAME);
  if (!path) throw new PeftError('FILE_NOT_FOUND', `no ${CONFIG_NAME} in ${dir}`);
  const json = await readJson(path, fs);
  const type = json.peft_type;
  if (typeof type !== 'string') throw new PeftError('INVALID_CONFIG', `${path}: field "peft_type" is missing`);
  const method = getPeftMethod(type);
  const config = configFromHfJson(method.configClass, json, path);
  return config.with({ inferenceMode: !isTrainable });
}

/** Wraps a base model with a new adapter (HF's get_peft_model). */
export function getPeftModel(model: PreTrainedModel, config: PeftConfig, adapterName = 'default'): PeftModel {
  return new PeftModel(model, config, adapterName);
}
