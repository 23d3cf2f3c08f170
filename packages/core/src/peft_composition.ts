/**
 * What PeftModel does with a composition (its hooks call these): checking a setup against the model's
 * adapters and layers, switching it on in every tuner layer, replicating the batch for Parallel, AdapterHub's
 * train_adapter / train_adapter_fusion freezing, fusion loss terms, and composition.json.
 */
import * as tf from '@tensorflow/tfjs';
import { PeftError } from './errors';
import type { Module, ModuleDict } from './nn/module';
import type { ForwardInputs } from './model';
import type { PeftModel } from './peft_model';
import { BaseTunerLayer } from './tuner';
import { isRecordingGradients } from './checkpoint';
import {
  type AdapterSetup,
  type CompositionBlock,
  type CompositionJson,
  blocksOf,
  compositionFromJson,
  compositionToJson,
  compositionToString,
  flattenComposition,
  isSingleAdapter,
  parallelChannels,
  parseComposition,
  validateComposition,
  FUSION_MODULE,
} from './composition';
import { type FileSystem, insidePath, joinPath, readJson, stableJson } from './io/fs';

export { FUSION_MODULE };
/** The file beside the adapters' folders that records a composed setup. */
export const COMPOSITION_NAME = 'composition.json';

/** A module that adds a term to the loss while it trains (AdapterFusion's value regulariser). */
export interface LossTermModule {
  lossTerm(): tf.Scalar | null;
}

function tunerLayers(peft: PeftModel): [string, BaseTunerLayer][] {
  return [...peft.namedModules()].filter((e): e is [string, BaseTunerLayer] => e[1] instanceof BaseTunerLayer);
}

function promptAdapters(peft: PeftModel): Set<string> {
  const enc = peft.maybeChild<ModuleDict>('prompt_encoder');
  return new Set(enc ? enc.keys() : []);
}

/**
 * Parses `setup` (a name, a list: Stack, or a block) and checks it against `peft`: the adapters exist; a
 * prompt-learning adapter appears at most once, as a name or a child of the top Stack (its virtual tokens are
 * not per layer); and every tuner layer supports each block that reaches its adapters (AdapterHub's
 * supported_compositions; a Stack of a single adapter is that adapter, which every layer runs).
 */
export function resolveSetup(peft: PeftModel, setup: unknown): CompositionBlock {
  const block = parseComposition(setup);
  const shown = compositionToString(block);
  const names = flattenComposition(block);
  const unknown = names.filter((n) => !Object.hasOwn(peft.peftConfig, n));
  if (unknown.length) throw new PeftError('INVALID_ARGUMENT', `adapter setup ${shown}: no adapter named ${unknown.map((n) => `"${n}"`).join(', ')}; adapters: ${Object.keys(peft.peftConfig).join(', ')}`);
  const prompts = promptAdapters(peft);
  const used = names.filter((n) => prompts.has(n));
  if (used.length > 1) throw new PeftError('UNSUPPORTED', `adapter setup ${shown}: only one prompt-learning adapter can be active at a time (${used.join(', ')})`);
  if (used.length && !(block.type === 'Stack' && block.children.includes(used[0]))) {
    throw new PeftError('UNSUPPORTED', `adapter setup ${shown}: prompt-learning adapter "${used[0]}" (${peft.peftConfig[used[0]].peftType}) adds virtual tokens to the whole input, so it can only be a direct child of the outer Stack (or a list of names), not inside a block`);
  }
  for (const [path, layer] of tunerLayers(peft)) {
    for (const b of blocksOf(block)) {
      const held = flattenComposition(b).filter((n) => layer.has(n));
      // a Stack reaching one adapter of the layer is that adapter (the blocks inside it are checked on their own)
      if (!held.length || (b.type === 'Stack' && held.length === 1)) continue;
      if (!layer.supportedCompositions.includes(b.type)) {
        const ok = layer.supportedCompositions.length ? `${layer.peftType} layers support ${layer.supportedCompositions.join(', ')}` : `${layer.peftType} layers support no composition blocks`;
        throw new PeftError('UNSUPPORTED', `adapter setup ${shown}: ${compositionToString(b)} is not supported at ${path} (a ${layer.moduleType} layer holding ${held.map((n) => `"${n}"`).join(', ')}); ${ok}`);
      }
      if (b.type === 'Fuse' && b.name.split(',').some((n) => !layer.has(n))) {
        throw new PeftError('UNSUPPORTED', `adapter setup ${shown}: ${path} holds only ${held.map((n) => `"${n}"`).join(', ')} of ${compositionToString(b)}; fused adapters must share their placements (the same layers and locations)`);
      }
      if (b.type === 'Fuse' && !layer.hasFusion(b.name)) {
        throw new PeftError('INVALID_ARGUMENT', `adapter setup ${shown}: ${path} has no fusion layer "${b.name}"; add it first (addAdapterFusion(peft, Fuse(${b.name.split(',').map((n) => `'${n}'`).join(', ')})))`);
      }
    }
  }
  return block;
}

/** The block the layers run: null for one adapter (every layer runs it without composition). */
export function effectiveComposition(block: CompositionBlock): CompositionBlock | null {
  return isSingleAdapter(block) ? null : block;
}

/** Puts `block` (or null) into every tuner layer. */
export function applyComposition(peft: PeftModel, block: CompositionBlock | null): void {
  for (const [, layer] of tunerLayers(peft)) layer.activeComposition = block;
}

function replicate<T>(v: T, k: number, disposeLater: tf.Tensor[]): T {
  if (v === undefined || v === null) return v;
  if (v instanceof tf.Tensor) {
    const t = tf.concat(Array(k).fill(v), 0);
    disposeLater.push(t);
    return t as T;
  }
  if (Array.isArray(v)) return Array.from({ length: k }, () => v).flat() as T;
  return v;
}

/**
 * Parallel: the inputs replicated k times along the batch (AdapterHub replicates at the first adapter layer;
 * before it every replica computes the same, so replicating the input is the same and keeps masks and
 * positions consistent). Returns the inputs and the tensors made here (the caller disposes them).
 */
export function replicateForParallel(inputs: ForwardInputs, block: CompositionBlock): { inputs: ForwardInputs; made: tf.Tensor[] } {
  const k = parallelChannels(block);
  if (k === 1) return { inputs, made: [] };
  if (inputs.pastKeyValues) throw new PeftError('UNSUPPORTED', `${compositionToString(block)}: Parallel does not run with a key/value cache (generation); set one adapter or a block without Parallel to generate`);
  const made: tf.Tensor[] = [];
  const out: ForwardInputs = { ...inputs };
  for (const key of ['inputIds', 'attentionMask', 'positionIds', 'inputsEmbeds', 'labels'] as const) {
    (out as Record<string, unknown>)[key] = replicate(inputs[key], k, made);
  }
  return { inputs: out, made };
}

/** The parameters adapter `name` owns: those it saves, and a prompt-learning adapter's encoder. */
function adapterParameters(peft: PeftModel, name: string): tf.Variable[] {
  const own = [...peft.adapterTensorMap(name).values()];
  const enc = peft.maybeChild<ModuleDict>('prompt_encoder')?.get(name);
  if (enc) own.push(...enc.parameters());
  return own;
}

/** The parameters of the fusion layers named by the setup's Fuse blocks. */
function fusionParameters(peft: PeftModel, block: AdapterSetup): tf.Variable[] {
  const names = new Set(blocksOf(block).filter((b) => b.type === 'Fuse').map((b) => (b as { name: string }).name));
  const out: tf.Variable[] = [];
  for (const [path, p] of peft.namedParameters()) {
    const parts = path.split('.');
    const i = parts.indexOf(FUSION_MODULE);
    if (i >= 0 && names.has(parts[i + 1])) out.push(p);
  }
  return out;
}

/**
 * AdapterHub's train_adapter / train_adapter_fusion after the setup is active: every parameter frozen except
 * the setup's adapters (`adapters`) and/or its fusion layers (`fusion`).
 */
export function freezeAllBut(peft: PeftModel, block: CompositionBlock, opts: { adapters: boolean; fusion: boolean }): void {
  const keep = new Set<tf.Variable>();
  if (opts.adapters) for (const n of flattenComposition(block)) for (const p of adapterParameters(peft, n)) keep.add(p);
  if (opts.fusion) {
    const fused = fusionParameters(peft, block);
    if (!fused.length) throw new PeftError('INVALID_ARGUMENT', `trainAdapterFusion: ${compositionToString(block)} names no fusion layer of this model; add one with addAdapterFusion first`);
    for (const p of fused) keep.add(p);
  }
  for (const p of peft.parameters()) p.trainable = keep.has(p);
}

/** The loss terms of trainable modules that declare one (AdapterFusion's value regulariser), summed; null if none. */
export function compositionLossTerm(peft: PeftModel): tf.Scalar | null {
  const mods: LossTermModule[] = [];
  for (const [path, m] of peft.namedModules()) {
    if (!path.includes(`.${FUSION_MODULE}.`)) continue;
    const lt = m as Module & Partial<LossTermModule>;
    if (typeof lt.lossTerm === 'function' && m.parameters().some((p) => p.trainable)) mods.push(lt as LossTermModule);
  }
  if (!mods.length) return null;
  return tf.tidy(() => {
    const terms = mods.map((m) => m.lossTerm()).filter((t): t is tf.Scalar => t !== null);
    return terms.length ? (tf.addN(terms) as tf.Scalar) : tf.scalar(0);
  });
}

// ——— composition.json ———

export interface CompositionFile {
  /** The active setup (compositionToJson). */
  active_setup: CompositionJson;
  /** Adapter name → its folder, relative to the composition's folder (`.` for the default adapter). */
  adapters: Record<string, string>;
  /** Fusion name → its folder (`fusion/<a,b,c>`), written by the fusion's saver. */
  fusions?: Record<string, string>;
}

export function compositionFileJson(block: AdapterSetup, adapters: Record<string, string>, fusions: Record<string, string> = {}): string {
  const file: CompositionFile = { active_setup: compositionToJson(block), adapters };
  if (Object.keys(fusions).length) file.fusions = fusions;
  return stableJson(file);
}

/** Reads `composition.json`; its errors name the file and field. */
export async function readCompositionFile(path: string, fs: FileSystem): Promise<{ setup: AdapterSetup; adapters: Record<string, string>; fusions: Record<string, string> }> {
  const json = await readJson(path, fs);
  const strings = (v: unknown, field: string): Record<string, string> => {
    if (v === undefined) return {};
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.values(v).every((s) => typeof s === 'string')) {
      throw new PeftError('INVALID_FILE', `${path}: field "${field}" must map names to folder names`);
    }
    return Object.assign(Object.create(null), v) as Record<string, string>;
  };
  if (!('active_setup' in json)) throw new PeftError('INVALID_FILE', `${path}: field "active_setup" is missing`);
  const setup = compositionFromJson(json.active_setup, `${path}: field "active_setup"`);
  try {
    validateComposition(setup);
  } catch (e) {
    if (PeftError.isInstance(e)) throw new PeftError('INVALID_FILE', `${path}: ${e.message}`);
    throw e;
  }
  const adapters = strings(json.adapters, 'adapters');
  const missing = flattenComposition(setup).filter((n) => !Object.hasOwn(adapters, n));
  if (missing.length) throw new PeftError('INVALID_FILE', `${path}: the active setup names ${missing.map((n) => `"${n}"`).join(', ')}, which field "adapters" does not list`);
  return { setup, adapters, fusions: strings(json.fusions, 'fusions') };
}

/** The setup's adapters as PeftModel activates them: the prompt-learning one (if any) first, as forward runs it. */
export function activeListOf(peft: PeftModel, block: CompositionBlock): string[] {
  const names = flattenComposition(block);
  const prompts = promptAdapters(peft);
  return [...names.filter((n) => prompts.has(n)), ...names.filter((n) => !prompts.has(n))];
}

/** Whether `list` is exactly the setup's own adapters (a re-application keeps the composition). */
export function sameActiveList(peft: PeftModel, list: string[], block: CompositionBlock): boolean {
  const own = activeListOf(peft, block);
  return list.length === own.length && list.every((n, i) => n === own[i]);
}

/**
 * After a composed forward: adds the trainable fusion layers' loss terms to the loss (inside the forward, so
 * gradients reach them) and disposes the replicated inputs outside gradient recording.
 */
export function finishComposedForward<O extends { loss?: tf.Scalar }>(peft: PeftModel, out: O, made: tf.Tensor[]): O {
  if (out.loss) {
    const term = compositionLossTerm(peft);
    if (term) {
      const loss = out.loss;
      out.loss = tf.add(loss, term) as tf.Scalar;
      if (!isRecordingGradients()) tf.dispose([loss, term]);
    }
  }
  if (!isRecordingGradients()) tf.dispose(made);
  return out;
}


/**
 * What a package adds to a composed setup's folder (the adapters package: its fusion layers): `save` writes its
 * parts under `dir` and returns name → folder for composition.json; `load` reads them back before the setup is
 * activated. Registered once on import (`registerCompositionPart`).
 */
export interface CompositionPart {
  /** The composition.json field it fills (`fusions`). */
  field: 'fusions';
  save(peft: PeftModel, dir: string, adapters: string[], fs: FileSystem): Promise<Record<string, string>>;
  load(peft: PeftModel, dir: string, folders: Record<string, string>, fs: FileSystem, opts: { maxBytes?: number }): Promise<void>;
}
const parts: CompositionPart[] = [];
export function registerCompositionPart(part: CompositionPart): void {
  if (!parts.some((p) => p.field === part.field)) parts.push(part);
}

/**
 * savePretrained's last step: with a composition active, the parts (fusions) and composition.json; without one,
 * a whole save (every adapter) removes a composition.json an earlier save left, so the folder loads as it is now.
 */
export async function saveCompositionFile(
  peft: PeftModel,
  block: CompositionBlock | null,
  dir: string,
  saved: string[],
  fs: FileSystem,
  whole: boolean,
  commit: (dir: string, files: Record<string, string>, remove: string[]) => Promise<void>,
): Promise<void> {
  if (!block) {
    if (whole && (await fs.exists(joinPath(dir, COMPOSITION_NAME)))) await commit(dir, {}, [COMPOSITION_NAME]);
    return;
  }
  const missing = flattenComposition(block).filter((n) => !saved.includes(n));
  if (missing.length) return; // a partial save (selectedAdapters) is not the composed setup
  const folders = Object.fromEntries(saved.map((n) => [n, n === 'default' ? '.' : n]));
  let fusions: Record<string, string> = {};
  for (const p of parts) fusions = { ...fusions, ...(await p.save(peft, dir, saved, fs)) };
  const needs = blocksOf(block).filter((b) => b.type === 'Fuse').map((b) => (b as { name: string }).name).filter((n) => !(n in fusions));
  if (needs.length) throw new PeftError('UNSUPPORTED', `savePretrained: the active setup ${compositionToString(block)} fuses ${needs.join('; ')}, but no package saved those fusion layers (import @peftjs/adapters)`);
  await commit(dir, { [COMPOSITION_NAME]: compositionFileJson(block, folders, fusions) }, []);
}

/**
 * PeftModel.fromPretrained of a folder with composition.json: every adapter it lists (the first through
 * `first`, the others with loadAdapter), the parts (fusions), then the setup activated.
 */
export async function loadComposed(
  dir: string,
  fs: FileSystem,
  first: (name: string, sub: string) => Promise<PeftModel>,
  opts: { isTrainable?: boolean; maxBytes?: number },
): Promise<PeftModel> {
  const path = joinPath(dir, COMPOSITION_NAME);
  const file = await readCompositionFile(path, fs);
  const entries = Object.entries(file.adapters);
  if (!entries.length) throw new PeftError('INVALID_FILE', `${path}: field "adapters" lists no adapter`);
  const sub = (name: string, folder: string) => (folder === '.' ? dir : insidePath(dir, folder, `${path}: adapter "${name}" folder`));
  const peft = await first(entries[0][0], sub(...entries[0]));
  try {
    for (const [name, folder] of entries.slice(1)) await peft.loadAdapter(sub(name, folder), name, { isTrainable: opts.isTrainable, fs, maxBytes: opts.maxBytes });
    if (Object.keys(file.fusions).length) {
      const part = parts.find((p) => p.field === 'fusions');
      if (!part) throw new PeftError('UNSUPPORTED', `${path}: the setup has fusion layers (${Object.keys(file.fusions).join('; ')}); import @peftjs/adapters to load them`);
      await part.load(peft, dir, file.fusions, fs, { maxBytes: opts.maxBytes });
    }
    peft.setActiveAdapters(file.setup);
  } catch (e) {
    peft.unload();
    throw e;
  }
  return peft;
}

/** Whether `dir` holds a composed setup (composition.json). */
export async function hasComposition(dir: string, fs: FileSystem): Promise<boolean> {
  return fs.exists(joinPath(dir, COMPOSITION_NAME));
}
