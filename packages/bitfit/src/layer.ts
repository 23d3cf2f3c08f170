import * as tf from '@tensorflow/tfjs';
import { BaseTunerLayer, Conv1D, LayerNorm, Linear, ParameterDict, PeftError, assertFiniteMerge, type Layer, type Module } from '@peftjs/core';

/** The modules BitFit trains the bias of. */
export type Biased = Linear | Conv1D | LayerNorm;

export function isBiasedModule(m: unknown): m is Biased {
  return (m instanceof Linear || m instanceof Conv1D || m instanceof LayerNorm) && m.maybeParam('bias') !== undefined;
}

type ParamSlots = { _params: Map<string, tf.Variable> };

/**
 * BitFit: each adapter holds a trained copy of the base module's bias in `bitfit_bias.<adapter>` (it starts
 * equal to the base bias, so the model is unchanged at init). The forward is the base module's own forward with
 * the adapter's bias in the place of its bias (the same op, so gradients reach only the copy). One adapter runs
 * at a time. Merging swaps the values of the two variables (exact: the merged bias is the trained one bit for
 * bit); unmerging swaps them back.
 */
export class BitFitLayer extends BaseTunerLayer {
  readonly peftType = 'BITFIT';

  constructor(base: Biased) {
    super(base);
    if (!isBiasedModule(this.getBaseLayer())) {
      throw new PeftError('INVALID_ARGUMENT', `BitFitLayer wraps a Linear, Conv1D or LayerNorm with a bias, not ${this.getBaseLayer().constructor.name}`);
    }
    this.registerModule('bitfit_bias', new ParameterDict());
  }

  get bitfitBias(): ParameterDict {
    return this.child<ParameterDict>('bitfit_bias');
  }

  private get baseBias(): tf.Variable {
    return this.getBaseLayer().param('bias');
  }

  adapterNames(): string[] {
    return this.bitfitBias.keys();
  }

  /** Adds adapter `name`: a copy of the base bias (shared data until the copy is trained). */
  updateLayer(name: string): void {
    if (this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer already has a BitFit adapter "${name}"`);
    this.bitfitBias.set(name, this.baseBias);
  }

  override merge(names?: string[], safeMerge?: false): void;
  override merge(names: string[] | undefined, safeMerge: true): Promise<void>;
  override merge(names: string[] | undefined, safeMerge: boolean): void | Promise<void>;
  override merge(names: string[] = this.activeAdapters, safeMerge = false): void | Promise<void> {
    const todo = names.filter((n) => this.has(n) && !this.mergedAdapters.includes(n));
    if (todo.length > 1) throw new PeftError('UNSUPPORTED', `trying to merge ${todo.length} BitFit adapters (${todo.join(', ')}); each holds a whole bias, so one is merged at a time`);
    if (!todo.length) return safeMerge ? Promise.resolve() : undefined;
    if (!safeMerge) {
      if (this.merged) this.unmerge();
      super.merge(todo, false);
      return;
    }
    return (async () => {
      await assertFiniteMerge(this.bitfitBias.get(todo[0])!, 'BitFit', todo[0], { keep: true, what: 'base bias' });
      if (this.merged) this.unmerge();
      super.merge(todo, false);
    })();
  }

  /** Exchanges the values of the base bias and the adapter's (no arithmetic; the variables keep their trainable flags). */
  private swap(name: string): void {
    const copy = this.bitfitBias.get(name)!;
    const base = this.baseBias;
    const held = tf.clone(base);
    base.assign(copy);
    copy.assign(held);
    held.dispose();
  }

  protected mergeOne(name: string): void {
    this.swap(name);
  }

  protected unmergeOne(name: string): void {
    this.swap(name);
  }

  protected deleteOne(name: string): void {
    this.bitfitBias.delete(name);
  }

  forward(x: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(x);
    if (bypassed) return bypassed;
    const name = this.soleActiveAdapter('BitFit');
    if (name === undefined) return this.baseLayer.forward(x);
    // the base module's forward with the adapter's bias in its slot (restored even when the forward throws)
    const inner = this.getBaseLayer() as unknown as ParamSlots & Module & Layer;
    const own = inner._params.get('bias')!;
    inner._params.set('bias', this.bitfitBias.get(name)!);
    try {
      return this.baseLayer.forward(x);
    } finally {
      inner._params.set('bias', own);
    }
  }
}
