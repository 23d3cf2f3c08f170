import type * as tf from '@tensorflow/tfjs';
import { BaseTunerLayer, Module, ModuleDict, PeftError, type Layer } from '@peftjs/core';

/**
 * A structural copy of a module: same class and fields, every parameter a new variable holding the same
 * values (tfjs variables share data until one is assigned), children copied the same way.
 */
export function cloneModule<M extends Module>(m: M): M {
  const copy = Object.create(Object.getPrototypeOf(m)) as M;
  Object.assign(copy, m);
  const c = copy as unknown as { _params: Map<string, tf.Variable>; _modules: Map<string, Module>; _buffers: Map<string, tf.Tensor> };
  c._params = new Map();
  c._modules = new Map();
  c._buffers = new Map((m as unknown as { _buffers: Map<string, tf.Tensor> })._buffers);
  for (const [n, p] of m.ownParameters()) copy.registerParameter(n, p, p.trainable);
  for (const [n, child] of m.children()) copy.registerModule(n, cloneModule(child));
  return copy;
}

/**
 * LN tuning (HF's LNTuningLayer): the targeted module (a LayerNorm or RMSNorm, or any layer) gets a
 * trainable copy per adapter in `ln_tuning_layers.<adapter>`; the forward runs the active adapter's copy
 * instead of the base module. Only one adapter may be active or merged at a time. Merging swaps the copy
 * into `base_layer` (exact, no arithmetic); unmerging swaps it back.
 */
export class LNTuningLayer extends BaseTunerLayer {
  readonly peftType = 'LN_TUNING';

  constructor(base: Module & Layer) {
    super(base);
    this.registerModule('ln_tuning_layers', new ModuleDict<Module & Layer>());
  }

  /** HF's repr: `ln_tuning.LNTuningLayer`. */
  override get moduleType(): string {
    return 'ln_tuning.LNTuningLayer';
  }

  get lnTuningLayers(): ModuleDict<Module & Layer> {
    return this.child<ModuleDict<Module & Layer>>('ln_tuning_layers');
  }

  adapterNames(): string[] {
    return this.lnTuningLayers.keys();
  }

  /** Adds adapter `name`: a copy of the current base layer (as HF's update_layer deep-copies it). */
  updateLayer(name: string): void {
    if (this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer already has an LN tuning adapter "${name}"`);
    const copy = cloneModule(this.baseLayer);
    copy.training = this.baseLayer.training;
    this.lnTuningLayers.set(name, copy);
  }

  /** HF: LN tuning merges one adapter at a time; a merged one is unmerged before another is merged. */
  override merge(names?: string[], safeMerge?: false): void;
  override merge(names: string[] | undefined, safeMerge: true): Promise<void>;
  override merge(names: string[] | undefined, safeMerge: boolean): void | Promise<void>;
  override merge(names: string[] = this.activeAdapters, safeMerge = false): void | Promise<void> {
    const todo = names.filter((n) => this.has(n) && !this.mergedAdapters.includes(n));
    if (todo.length > 1) {
      throw new PeftError('UNSUPPORTED', `trying to merge ${todo.length} LN tuning adapters (${todo.join(', ')}); LN tuning merges one adapter at a time`);
    }
    if (todo.length && this.merged) this.unmerge();
    // there is no arithmetic to check: safe_merge is the same swap (as in HF)
    super.merge(todo, false);
    if (safeMerge) return Promise.resolve();
  }

  private swap(name: string): void {
    const copy = this.lnTuningLayers.get(name)!;
    const base = this.baseLayer;
    this.registerModule('base_layer', copy);
    this.lnTuningLayers.set(name, base);
  }

  protected mergeOne(name: string): void {
    this.swap(name);
  }

  protected unmergeOne(name: string): void {
    this.swap(name);
  }

  protected deleteOne(name: string): void {
    this.lnTuningLayers.delete(name);
  }

  forward(x: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(x);
    if (bypassed) return bypassed;
    const name = this.soleActiveAdapter('LN tuning');
    if (name === undefined) return this.baseLayer.forward(x);
    return this.lnTuningLayers.get(name)!.forward(x);
  }
}
