/**
 * AdapterFusion (Pfeiffer et al., 2021; AdapterHub's BertFusion and AdapterFusionConfig): in each bottleneck
 * layer, an attention over the fused adapters' outputs. The query is the adapters' input (the sub-block's
 * output), keys and values are each adapter's `up` (its scaled up-projection, before its skip connection):
 *   scores_i = Q(query) · K(up_i),  p = softmax(scores / T),  out = Σ_i p_i · V(up_i) + residual,
 * with V initialised to the identity (off-diagonal 1e-6) by the 'dynamic' preset. Trained with the adapters
 * frozen (`peft.trainAdapterFusion(Fuse(...))`); 'dynamic' adds 0.01·‖I − V‖² to the loss while it trains.
 * Saved as its own folder `fusion/<a,b,c>/`: adapter_fusion_config.json + adapter_fusion.safetensors.
 */
import * as tf from '@tensorflow/tfjs';
import {
  Dropout,
  FUSION_MODULE,
  Fuse,
  Linear,
  Module,
  ModuleDict,
  PeftError,
  commitFiles,
  committedView,
  compositionToString,
  flattenComposition,
  getFileSystem,
  insidePath,
  joinPath,
  nextSeed,
  parseSafetensors,
  rawToTensor,
  readFileChecked,
  readJson,
  stableJson,
  tensorsToSafetensors,
  type CompositionPart,
  type FileSystem,
  type FuseBlock,
  type LossTermModule,
  type PeftModel,
} from '@peftjs/core';
import { BottleneckLayer } from './layer';

export const FUSION_CONFIG_NAME = 'adapter_fusion_config.json';
export const FUSION_WEIGHTS_NAME = 'adapter_fusion.safetensors';
/** Where a composed setup's fusions are saved, under its folder: `fusion/<a,b,c>/`. */
export const FUSION_DIR = 'fusion';

/** AdapterHub's AdapterFusionConfig fields (camelCase; saved snake_case). */
export interface AdapterFusionConfigFields {
  /** A key projection K (Linear d → d). */
  key: boolean;
  /** A query projection Q (Linear d → d). */
  query: boolean;
  /** A value projection V (Linear d → d, no bias). */
  value: boolean;
  /** The query is the sub-block output before the adapter's own pre-processing (original LN) rather than after. */
  queryBeforeLn: boolean;
  /** While training, add 0.01·‖I − V‖² to the loss (keeps V near the identity). */
  regularization: boolean;
  /** Add the residual to the values before the attention (rather than to the output after it). */
  residualBefore: boolean;
  /** Softmax temperature starting at 50, lowered by 50/1000 each forward down to 1; false: T = 1. */
  temperature: boolean;
  /** V applies to each adapter's output before the weighted sum (true) or to the sum after it. */
  valueBeforeSoftmax: boolean;
  /** V starts as the identity (off-diagonal 1e-6) rather than N(0, 0.02). */
  valueInitialized: boolean;
  /** Dropout on the attention scores; null: the model's attention dropout. */
  dropoutProb: number | null;
}

const FIELDS: Record<keyof AdapterFusionConfigFields, string> = {
  key: 'key',
  query: 'query',
  value: 'value',
  queryBeforeLn: 'query_before_ln',
  regularization: 'regularization',
  residualBefore: 'residual_before',
  temperature: 'temperature',
  valueBeforeSoftmax: 'value_before_softmax',
  valueInitialized: 'value_initialized',
  dropoutProb: 'dropout_prob',
};

/** AdapterHub's two presets: 'dynamic' (the default: Q, K, V with V at the identity, regularised) and 'static' (no V). */
export const FUSION_PRESETS: Record<'dynamic' | 'static', AdapterFusionConfigFields> = {
  dynamic: { key: true, query: true, value: true, queryBeforeLn: false, regularization: true, residualBefore: false, temperature: false, valueBeforeSoftmax: true, valueInitialized: true, dropoutProb: null },
  static: { key: true, query: true, value: false, queryBeforeLn: false, regularization: false, residualBefore: false, temperature: false, valueBeforeSoftmax: true, valueInitialized: false, dropoutProb: null },
};

/** An AdapterFusion config: a preset name plus overrides. `new AdapterFusionConfig('dynamic', { temperature: true })`. */
export class AdapterFusionConfig implements AdapterFusionConfigFields {
  key!: boolean;
  query!: boolean;
  value!: boolean;
  queryBeforeLn!: boolean;
  regularization!: boolean;
  residualBefore!: boolean;
  temperature!: boolean;
  valueBeforeSoftmax!: boolean;
  valueInitialized!: boolean;
  dropoutProb!: number | null;

  constructor(preset: 'dynamic' | 'static' = 'dynamic', overrides: Partial<AdapterFusionConfigFields> = {}, source = 'AdapterFusionConfig') {
    if (!Object.hasOwn(FUSION_PRESETS, preset)) throw new PeftError('INVALID_CONFIG', `${source}: unknown fusion preset ${JSON.stringify(preset)}; expected 'dynamic' or 'static'`);
    const o = (overrides ?? {}) as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!Object.hasOwn(FIELDS, k)) throw new PeftError('INVALID_CONFIG', `${source}: unknown field "${k}"; fields: ${Object.keys(FIELDS).join(', ')}`);
    Object.assign(this, FUSION_PRESETS[preset], o);
    for (const k of Object.keys(FIELDS) as (keyof AdapterFusionConfigFields)[]) {
      const v = this[k];
      const ok = k === 'dropoutProb' ? v === null || (typeof v === 'number' && v >= 0 && v < 1) : typeof v === 'boolean';
      if (!ok) throw new PeftError('INVALID_CONFIG', `${source}: field "${k}" must be ${k === 'dropoutProb' ? 'null or a number in [0, 1)' : 'true or false'}, got ${JSON.stringify(v)}`);
    }
  }

  toJSON(): Record<string, unknown> {
    return Object.fromEntries((Object.keys(FIELDS) as (keyof AdapterFusionConfigFields)[]).map((k) => [FIELDS[k], this[k]]));
  }

  static fromJSON(json: unknown, source: string): AdapterFusionConfig {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PeftError('INVALID_FILE', `${source}: field "config" must be an object`);
    const back = Object.fromEntries(Object.entries(FIELDS).map(([camel, snake]) => [snake, camel]));
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(json)) {
      if (!Object.hasOwn(back, k)) throw new PeftError('INVALID_FILE', `${source}: unknown fusion config field "${k}"`);
      o[back[k]] = v;
    }
    try {
      return new AdapterFusionConfig('dynamic', o as Partial<AdapterFusionConfigFields>, source);
    } catch (e) {
      if (PeftError.isInstance(e)) throw new PeftError('INVALID_FILE', e.message);
      throw e;
    }
  }
}

function linear(d: number, bias: boolean, weight: tf.Tensor): Linear {
  const b = bias ? tf.zeros([d]) : undefined;
  const l = new Linear(d, d, { bias, weight, biasValue: b });
  tf.dispose([weight, b as tf.Tensor]);
  return l;
}

/** One layer's AdapterFusion (AdapterHub's BertFusion), parameters `query`, `key`, `value` as AdapterHub names them. */
export class AdapterFusion extends Module implements LossTermModule {
  /** The current softmax temperature. */
  T: number;
  /** Receives each forward's attention probabilities [B, T, N] (a kept copy) while fusionAttentions records. */
  recorder: ((probabilities: tf.Tensor) => void) | null = null;
  private readonly reduction: number;

  constructor(readonly config: AdapterFusionConfig, readonly denseSize: number, attentionDropout = 0) {
    super();
    const d = denseSize;
    // AdapterHub's init_bert_weights: N(0, 0.02) weights, zero biases
    const bert = () => tf.randomNormal([d, d], 0, 0.02, 'float32', nextSeed());
    if (!config.query && !config.key && !config.value) throw new PeftError('INVALID_CONFIG', 'AdapterFusionConfig: query, key and value are all false; AdapterHub then scores with one dense layer, which peftjs does not implement');
    if (config.query) this.registerModule('query', linear(d, true, bert()));
    if (config.key) this.registerModule('key', linear(d, true, bert()));
    if (config.value) {
      const w = config.valueInitialized ? tf.tidy(() => tf.add(tf.mul(tf.eye(d), 1 - 1e-6), 1e-6)) : bert();
      this.registerModule('value', linear(d, false, w));
    }
    this.registerModule('dropout', new Dropout(config.dropoutProb ?? attentionDropout));
    this.T = config.temperature ? 50 : 1;
    this.reduction = this.T / 1000;
  }

  private proj(name: 'query' | 'key' | 'value', x: tf.Tensor): tf.Tensor {
    const l = this.maybeChild<Linear>(name);
    return l ? l.forward(x) : x;
  }

  /** The attention probabilities over the adapters, [B, T, N], for a query [B, T, d] and the adapters' ups [B, T, N, d]. */
  probabilities(query: tf.Tensor, ups: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const q = this.proj('query', query);
      const k = this.proj('key', ups);
      const scores = this.child<Dropout>('dropout').forward(tf.sum(tf.mul(tf.expandDims(q, 2), k), -1));
      return tf.softmax(tf.div(scores, this.T));
    });
  }

  /** Σᵢ pᵢ·V(upᵢ) + residual (AdapterHub's BertFusion.forward); `ups` [B, T, N, d]. */
  fuse(query: tf.Tensor, ups: tf.Tensor, residual: tf.Tensor): tf.Tensor {
    const out = tf.tidy(() => {
      let values = ups;
      if (this.config.residualBefore) values = tf.add(values, tf.expandDims(residual, 2));
      const p = this.probabilities(query, ups);
      if (this.recorder) this.recorder(tf.keep(tf.clone(p)));
      const v = this.config.valueBeforeSoftmax ? this.proj('value', values) : values;
      let context = tf.sum(tf.mul(tf.expandDims(p, -1), v), 2);
      if (!this.config.valueBeforeSoftmax) context = this.proj('value', context);
      return this.config.residualBefore ? context : tf.add(context, residual);
    });
    if (this.config.temperature) this.T = Math.max(this.T - this.reduction, 1);
    return out;
  }

  /** 'dynamic': 0.01·‖I − V‖² (AdapterHub's get_fusion_regularization_loss), while V trains. */
  lossTerm(): tf.Scalar | null {
    const v = this.maybeChild<Linear>('value');
    if (!this.config.regularization || !v || !v.weight.trainable) return null;
    return tf.tidy(() => tf.mul(tf.sum(tf.square(tf.sub(tf.eye(this.denseSize), v.weight))), 0.01) as tf.Scalar);
  }
}

/**
 * AdapterHub's output_adapter_fusion_attentions: runs `fn` (a forward) and returns, beside its result, each fusion
 * layer's attention over the fused adapters, `attentions[fusion name][layer path]` [B, T, N] (the adapters in the
 * Fuse's order). The caller disposes the tensors.
 */
export function fusionAttentions<T>(peft: PeftModel, fn: () => T): { result: T; attentions: Record<string, Record<string, tf.Tensor>> } {
  const attentions: Record<string, Record<string, tf.Tensor>> = Object.create(null);
  const fusions: AdapterFusion[] = [];
  for (const [path, layer] of bottleneckLayers(peft)) {
    const dict = layer.maybeChild<ModuleDict<AdapterFusion>>(FUSION_MODULE);
    for (const name of dict?.keys() ?? []) {
      const f = dict!.get(name)!;
      fusions.push(f);
      f.recorder = (p) => {
        const byLayer = (attentions[name] ??= Object.create(null) as Record<string, tf.Tensor>);
        byLayer[path]?.dispose(); // a second forward inside fn: the last one's
        byLayer[path] = p;
      };
    }
  }
  try {
    const result = fn();
    if (result instanceof Promise) throw new PeftError('INVALID_ARGUMENT', 'fusionAttentions: fn must run the forward synchronously (peft.forward), not return a Promise');
    return { result, attentions };
  } catch (e) {
    for (const byLayer of Object.values(attentions)) tf.dispose(Object.values(byLayer));
    throw e;
  } finally {
    for (const f of fusions) f.recorder = null;
  }
}

/** The fusion layer `name` (`a,b,c`) of a bottleneck layer, if it has one. */
export function fusionOf(layer: BottleneckLayer, name: string): AdapterFusion | undefined {
  return layer.maybeChild<ModuleDict<AdapterFusion>>(FUSION_MODULE)?.get(name);
}

function bottleneckLayers(peft: PeftModel): [string, BottleneckLayer][] {
  return [...peft.namedModules()].filter((e): e is [string, BottleneckLayer] => e[1] instanceof BottleneckLayer);
}

function checkFuse(fuse: unknown, where: string): FuseBlock {
  const f = fuse as FuseBlock;
  if (typeof f !== 'object' || f === null || f.type !== 'Fuse') throw new PeftError('INVALID_ARGUMENT', `${where}: expected a Fuse block (Fuse('a', 'b', …)), got ${typeof fuse === 'object' && fuse ? compositionToString(fuse as FuseBlock) : typeof fuse}`);
  return f;
}

/**
 * AdapterHub's add_adapter_fusion: a fusion layer for the Fuse's adapters in every bottleneck layer that holds
 * all of them (in a Stack child, its last adapter). Its parameters start trainable; train it with
 * `peft.trainAdapterFusion(fuse)`.
 */
export function addAdapterFusion(peft: PeftModel, fuse: FuseBlock, config: AdapterFusionConfig = new AdapterFusionConfig()): void {
  checkFuse(fuse, 'addAdapterFusion');
  if (!(config instanceof AdapterFusionConfig)) throw new PeftError('INVALID_ARGUMENT', 'addAdapterFusion: config must be an AdapterFusionConfig');
  const names = fuse.name.split(',');
  const unknown = flattenComposition(fuse).filter((n) => !Object.hasOwn(peft.peftConfig, n));
  if (unknown.length) throw new PeftError('INVALID_ARGUMENT', `addAdapterFusion ${compositionToString(fuse)}: no adapter named ${unknown.map((n) => `"${n}"`).join(', ')}; adapters: ${Object.keys(peft.peftConfig).join(', ')}`);
  const notBn = names.filter((n) => peft.peftConfig[n].peftType !== 'BOTTLENECK');
  if (notBn.length) throw new PeftError('UNSUPPORTED', `addAdapterFusion ${compositionToString(fuse)}: AdapterFusion fuses bottleneck adapters; ${notBn.map((n) => `"${n}" is ${peft.peftConfig[n].peftType}`).join(', ')}`);
  const dropout = (peft.model.config as { attentionDropout?: number }).attentionDropout ?? 0;
  let added = 0;
  for (const [path, layer] of bottleneckLayers(peft)) {
    if (!names.every((n) => layer.has(n))) continue;
    let dict = layer.maybeChild<ModuleDict<AdapterFusion>>(FUSION_MODULE);
    if (!dict) dict = layer.registerModule(FUSION_MODULE, new ModuleDict<AdapterFusion>());
    if (dict.has(fuse.name)) throw new PeftError('INVALID_ARGUMENT', `addAdapterFusion: ${path} already has a fusion layer "${fuse.name}"`);
    const f = new AdapterFusion(config, layer.adapter(names[0]).options.inputSize, dropout);
    f.train(layer.training);
    dict.set(fuse.name, f);
    added++;
  }
  if (!added) throw new PeftError('INVALID_ARGUMENT', `addAdapterFusion ${compositionToString(fuse)}: no bottleneck layer holds all of ${names.join(', ')} (they share no placement)`);
}

/** Removes the fusion layer `fuse.name` everywhere (its parameters disposed). */
export function deleteAdapterFusion(peft: PeftModel, fuse: FuseBlock): void {
  checkFuse(fuse, 'deleteAdapterFusion');
  let found = false;
  for (const [, layer] of bottleneckLayers(peft)) {
    const dict = layer.maybeChild<ModuleDict<AdapterFusion>>(FUSION_MODULE);
    if (dict?.has(fuse.name)) {
      dict.delete(fuse.name);
      found = true;
    }
  }
  if (!found) throw new PeftError('INVALID_ARGUMENT', `deleteAdapterFusion: no fusion layer "${fuse.name}"`);
}

/** Removes (and disposes) a layer's fusion layers that fuse adapter `adapter` (BottleneckLayer.deleteOne). */
export function dropFusionsOf(layer: BottleneckLayer, adapter: string): void {
  const dict = layer.maybeChild<ModuleDict<AdapterFusion>>(FUSION_MODULE);
  for (const name of dict?.keys() ?? []) if (name.split(',').includes(adapter)) dict!.delete(name);
}

/** The fusion names this model holds. */
export function listAdapterFusions(peft: PeftModel): string[] {
  const out = new Set<string>();
  for (const [, layer] of bottleneckLayers(peft)) for (const k of layer.maybeChild<ModuleDict>(FUSION_MODULE)?.keys() ?? []) out.add(k);
  return [...out];
}

/** The fusion's parameters by file key: the PeftModel path with the fusion name removed. */
function fusionTensorMap(peft: PeftModel, name: string): { map: Map<string, tf.Variable>; config?: AdapterFusionConfig; hidden?: number } {
  const map = new Map<string, tf.Variable>();
  let config: AdapterFusionConfig | undefined;
  let hidden: number | undefined;
  for (const [path, layer] of bottleneckLayers(peft)) {
    const f = fusionOf(layer, name);
    if (!f) continue;
    config ??= f.config;
    hidden ??= f.denseSize;
    for (const [k, p] of f.namedParameters()) map.set(`${path}.${FUSION_MODULE}.${k}`, p);
  }
  return { map, config, hidden };
}

/**
 * Saves fusion `fuse.name` into `dir` (AdapterHub's save_adapter_fusion): adapter_fusion_config.json
 * (`adapter_names`, `config` in AdapterHub's snake_case, `hidden_size`, `name`) and adapter_fusion.safetensors
 * (keys `base_model.model.<layer path>.adapter_fusion_layer.query.weight` …), committed together.
 */
export async function saveAdapterFusion(peft: PeftModel, dir: string, fuse: FuseBlock, opts: { fs?: FileSystem } = {}): Promise<void> {
  checkFuse(fuse, 'saveAdapterFusion');
  const { map, config, hidden } = fusionTensorMap(peft, fuse.name);
  if (!config) throw new PeftError('INVALID_ARGUMENT', `saveAdapterFusion: this model has no fusion layer "${fuse.name}"`);
  const tensors = Object.fromEntries([...map].map(([k, v]) => [k, v.clone()]));
  let weights: Uint8Array;
  try {
    weights = await tensorsToSafetensors(tensors, { metadata: { format: 'pt', peftjs: 'adapter_fusion' } });
  } finally {
    tf.dispose(Object.values(tensors));
  }
  const json = stableJson({ adapter_names: fuse.name.split(','), config: config.toJSON(), hidden_size: hidden, name: fuse.name });
  await commitFiles(opts.fs ?? getFileSystem(), dir, { [FUSION_WEIGHTS_NAME]: weights, [FUSION_CONFIG_NAME]: json });
}

/**
 * Loads a fusion saved by saveAdapterFusion (AdapterHub's load_adapter_fusion) onto a model that holds its
 * adapters; returns its Fuse block. Errors name the file and the tensor.
 */
export async function loadAdapterFusion(peft: PeftModel, dir: string, opts: { fs?: FileSystem; maxBytes?: number } = {}): Promise<FuseBlock> {
  const fs = opts.fs ?? getFileSystem();
  const view = await committedView(fs, dir);
  const cfgPath = await view.path(FUSION_CONFIG_NAME);
  if (!cfgPath) throw new PeftError('FILE_NOT_FOUND', `no ${FUSION_CONFIG_NAME} in ${dir}`);
  const json = await readJson(cfgPath, fs);
  const names = json.adapter_names;
  if (!Array.isArray(names) || !names.length || !names.every((n) => typeof n === 'string')) throw new PeftError('INVALID_FILE', `${cfgPath}: field "adapter_names" must be a list of adapter names`);
  const config = AdapterFusionConfig.fromJSON(json.config, cfgPath);
  const fuse = Fuse(...(names as string[]));
  if (json.name !== undefined && json.name !== fuse.name) throw new PeftError('INVALID_FILE', `${cfgPath}: field "name" is ${JSON.stringify(json.name)} but adapter_names give "${fuse.name}"`);
  const wPath = (await view.path(FUSION_WEIGHTS_NAME)) ?? joinPath(dir, FUSION_WEIGHTS_NAME);
  const file = parseSafetensors(await readFileChecked(wPath, fs, opts.maxBytes ?? Infinity, 'maxBytes (the load budget)'), wPath);
  addAdapterFusion(peft, fuse, config);
  try {
    const { map, hidden } = fusionTensorMap(peft, fuse.name);
    if (typeof json.hidden_size === 'number' && json.hidden_size !== hidden) throw new PeftError('SHAPE_MISMATCH', `${cfgPath}: hidden_size ${json.hidden_size}, but this model's is ${hidden}`);
    const unexpected = Object.keys(file.tensors).filter((k) => !map.has(k));
    if (unexpected.length) throw new PeftError('INVALID_FILE', `${wPath}: tensors ${unexpected.slice(0, 3).map((k) => `"${k}"`).join(', ')} belong to no fusion layer of this model`);
    for (const [k, v] of map) {
      const raw = file.tensors[k];
      if (!raw) throw new PeftError('INVALID_FILE', `${wPath}: missing tensor "${k}"`);
      if (!tf.util.arraysEqual(raw.shape, v.shape)) throw new PeftError('SHAPE_MISMATCH', `${wPath}: tensor "${k}" has shape [${raw.shape}] but this model needs [${v.shape}]`);
    }
    for (const [k, v] of map) {
      const t = rawToTensor(k, file.tensors[k], wPath);
      v.assign(t.dtype === v.dtype ? t : t.cast(v.dtype));
      t.dispose();
    }
  } catch (e) {
    deleteAdapterFusion(peft, fuse);
    throw e;
  }
  return fuse;
}

/** The folder of a fusion inside a composed setup's folder: `fusion/<a,b,c>`. */
export function fusionFolder(dir: string, name: string): string {
  return insidePath(dir, `${FUSION_DIR}/${name}`, 'fusion folder');
}

/** composition.json's `fusions`: savePretrained of a composed setup saves every fusion whose adapters it saves. */
export const fusionCompositionPart: CompositionPart = {
  field: 'fusions',
  async save(peft, dir, adapters, fs) {
    const out: Record<string, string> = {};
    for (const name of listAdapterFusions(peft)) {
      const names = name.split(',');
      if (!names.every((n) => adapters.includes(n))) continue;
      await saveAdapterFusion(peft, fusionFolder(dir, name), Fuse(...names), { fs });
      out[name] = `${FUSION_DIR}/${name}`;
    }
    return out;
  },
  async load(peft, dir, folders, fs, opts) {
    for (const [name, folder] of Object.entries(folders)) {
      const fuse = await loadAdapterFusion(peft, insidePath(dir, folder, `composition.json: fusion "${name}" folder`), { fs, maxBytes: opts.maxBytes });
      if (fuse.name !== name) throw new PeftError('INVALID_FILE', `${joinPath(dir, folder)}: holds fusion "${fuse.name}", but composition.json names it "${name}"`);
    }
  },
};
