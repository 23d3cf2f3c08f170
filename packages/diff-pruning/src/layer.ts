// Diff pruning's whole math: the hard-concrete gate (Louizos et al., 2018), its expected-L0 penalty, the
// gated and the projected diff, and the projection to an exact density (Guo et al., 2021).
import * as tf from '@tensorflow/tfjs';
import { BaseTunerLayer, ModuleDict, ParameterDict, PeftError, assertFiniteMerge, nextSeed, type Layer, type Module } from '@peftjs/core';

/** The hard-concrete gate's constants: stretch (γ, ζ) and temperature β. */
export interface GateParams {
  gamma: number;
  zeta: number;
  beta: number;
}

/** Louizos et al.'s defaults: (γ, ζ) = (−0.1, 1.1), β = 2/3. */
export const DEFAULT_GATE: GateParams = { gamma: -0.1, zeta: 1.1, beta: 2 / 3 };

/** u is drawn from [EPS, 1 − EPS]: log u and log(1 − u) stay finite. */
const EPS = 1e-6;

/**
 * A hard-concrete sample for training: u ~ U(0, 1), s = sigmoid((log u − log(1 − u) + log α) / β),
 * z = min(1, max(0, s·(ζ − γ) + γ)). Differentiable in log α (zero where clipped). `u` may be given (tests).
 */
export function sampleGate(logAlpha: tf.Tensor, g: GateParams = DEFAULT_GATE, u?: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const uu = u ?? tf.randomUniform(logAlpha.shape, EPS, 1 - EPS, 'float32', nextSeed());
    const s = tf.sigmoid(tf.div(tf.add(tf.sub(tf.log(uu), tf.log1p(tf.neg(uu))), logAlpha), g.beta));
    return tf.clipByValue(tf.add(tf.mul(s, g.zeta - g.gamma), g.gamma), 0, 1);
  });
}

/** The deterministic gate at test time: ẑ = min(1, max(0, sigmoid(log α)·(ζ − γ) + γ)). */
export function deterministicGate(logAlpha: tf.Tensor, g: GateParams = DEFAULT_GATE): tf.Tensor {
  return tf.tidy(() => tf.clipByValue(tf.add(tf.mul(tf.sigmoid(logAlpha), g.zeta - g.gamma), g.gamma), 0, 1));
}

/** P(z ≠ 0) per entry: sigmoid(log α − β·log(−γ/ζ)); its sum is the expected L0 norm of the gated diff. */
export function gateOpenProbability(logAlpha: tf.Tensor, g: GateParams = DEFAULT_GATE): tf.Tensor {
  return tf.tidy(() => tf.sigmoid(tf.sub(logAlpha, g.beta * Math.log(-g.gamma / g.zeta))));
}

/** The expected L0 norm Σ sigmoid(log α − β·log(−γ/ζ)) (a scalar, differentiable in log α). */
export function expectedL0(logAlpha: tf.Tensor, g: GateParams = DEFAULT_GATE): tf.Scalar {
  return tf.tidy(() => tf.sum(gateOpenProbability(logAlpha, g)) as tf.Scalar);
}

/**
 * The expected L0 norm of a structured diff δ ⊙ z ⊙ z_g (one group gate z_g for the tensor): an entry is nonzero iff
 * both its gate and the group's are, independently, so E[L0] = P(z_g ≠ 0) · Σ P(z_i ≠ 0).
 */
export function structuredExpectedL0(logAlpha: tf.Tensor, groupLogAlpha: tf.Tensor, g: GateParams = DEFAULT_GATE): tf.Scalar {
  return tf.tidy(() => tf.mul(tf.sum(gateOpenProbability(groupLogAlpha, g)), expectedL0(logAlpha, g)) as tf.Scalar);
}

/** Entries a projection to `density` keeps of a tensor of `numel` entries: round(density · numel). */
export function keptCount(density: number, numel: number): number {
  return Math.min(numel, Math.round(density * numel));
}

/**
 * Projects a dense diff onto the L0 ball (magnitude pruning): the k = round(density · numel) entries of largest
 * |diff|, as flat indices into the row-major tensor (int32, ascending) and their values. Ties go to the lower index.
 */
export function projectDiff(diff: tf.Tensor, density: number): { indices: tf.Tensor1D; values: tf.Tensor1D } {
  const k = keptCount(density, diff.size);
  return tf.tidy(() => {
    const flat = tf.reshape(diff, [-1]) as tf.Tensor1D;
    if (k === 0) return { indices: tf.zeros([0], 'int32') as tf.Tensor1D, values: tf.zeros([0], diff.dtype) as tf.Tensor1D };
    const picked = tf.topk(tf.abs(flat), k).indices;
    // ascending order: the top k of −index (int32, exact at any size)
    const indices = tf.neg(tf.topk(tf.neg(picked), k).values) as tf.Tensor1D;
    return { indices, values: tf.gather(flat, indices) as tf.Tensor1D };
  });
}

/** A projected diff as a dense tensor of `shape`: the values at their flat indices, zeros elsewhere. */
export function scatterDiff(indices: tf.Tensor, values: tf.Tensor, shape: number[]): tf.Tensor {
  return scatterOp(indices, values, shape);
}

// tfjs registers no gradient for ScatterNd: d(values) = dy at the indices. The indices are clamped into the
// tensor: a corrupt file's index outside [0, numel) must not reach the wasm kernel, which writes unchecked.
function scatterOp(indices: tf.Tensor, values: tf.Tensor, shape: number[]): tf.Tensor {
  const numel = shape.reduce((a, b) => a * b, 1);
  if (indices.size === 0) return tf.zeros(shape, values.dtype);
  const f = tf.customGrad(((v: tf.Tensor, save: tf.GradSaveFunc) => {
    // (minimum/maximum: wasm's ClipByValue reads int32 data as float32)
    const idx = tf.reshape(tf.minimum(tf.maximum(indices, tf.scalar(0, 'int32')), tf.scalar(numel - 1, 'int32')), [-1, 1]);
    save([idx]);
    const value = tf.reshape(tf.scatterND(idx, v, [numel]), shape);
    return { value, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.gatherND(tf.reshape(dy, [-1]), saved[0]) };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return (f as unknown as (v: tf.Tensor) => tf.Tensor)(values);
}

/** An int32 index variable that never trains, whatever a caller sets (it is the mask's structure). */
function pinFrozen(v: tf.Variable): tf.Variable {
  Object.defineProperty(v, 'trainable', { get: () => false, set: () => undefined, configurable: true });
  return v;
}

const DICTS = ['delta', 'log_alpha', 'group_log_alpha', 'indices', 'values'] as const;

type ParamSlots = { _params: Map<string, tf.Variable | tf.Tensor> };

/** What one adapter of a layer needs to know: its gate and which base parameters it diffs. */
export interface DiffAdapterOptions {
  gate: GateParams;
  /** Base parameter names diffed (`weight`, `bias`), each present on the base module. */
  parameters: string[];
  initLogAlpha: number;
  density: number;
  /** A group gate per diffed tensor besides the entry gates (structured diff pruning): δ ⊙ z ⊙ z_g. */
  structured: boolean;
}

/**
 * Diff pruning on any module: each adapter adds a difference to some of the wrapped module's parameters,
 * W_eff = W + δ ⊙ z, and the module's own forward runs with W_eff in W's place (so autodiff reaches δ and log α,
 * and any module type works). Two phases per adapter:
 * - gated: `diff_pruning_delta.<adapter>.<param>` (δ, zeros at init: identity) and
 *   `diff_pruning_log_alpha.<adapter>.<param>` train; z is a hard-concrete sample in training and the
 *   deterministic gate ẑ at eval; structured adapters also train `diff_pruning_group_log_alpha.<adapter>.<param>`
 *   ([1]: one gate z_g for the whole tensor, W_eff = W + δ ⊙ z ⊙ z_g);
 * - projected: `diff_pruning_indices.<adapter>.<param>` (int32 flat indices, frozen) and
 *   `diff_pruning_values.<adapter>.<param>` (trainable): a fixed mask, the diff is the values at the indices.
 * Several active adapters add their diffs. Merging adds the diff into the base parameter; unmerging subtracts it.
 */
export class DiffPruningLayer extends BaseTunerLayer {
  readonly peftType = 'DIFF_PRUNING';
  private readonly options = new Map<string, DiffAdapterOptions>();

  constructor(base: Module & Layer) {
    super(base);
    for (const kind of DICTS) this.registerModule(`diff_pruning_${kind}`, new ModuleDict<ParameterDict>());
  }

  private dict(kind: (typeof DICTS)[number]): ModuleDict<ParameterDict> {
    return this.child<ModuleDict<ParameterDict>>(`diff_pruning_${kind}`);
  }

  /** The base module's parameter `name` (the innermost module's). */
  private baseParam(name: string): tf.Variable {
    return this.getBaseLayer().param(name);
  }

  adapterNames(): string[] {
    return [...this.options.keys()];
  }

  adapterOptions(name: string): DiffAdapterOptions | undefined {
    return this.options.get(name);
  }

  /** Whether adapter `name` is projected (a fixed mask) rather than gated. */
  isProjected(name: string): boolean {
    return this.dict('values').has(name);
  }

  /**
   * Adds adapter `name`: gated (δ = 0, log α = initLogAlpha) or, with `projected`, a fixed mask of
   * round(density · numel) entries per parameter (values 0, indices evenly spread until a file or a projection
   * fills them). The model is unchanged either way.
   */
  updateLayer(name: string, opts: DiffAdapterOptions, projected: boolean): void {
    if (this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer already has a diff pruning adapter "${name}"`);
    const base = this.getBaseLayer();
    for (const p of opts.parameters) {
      if (!base.maybeParam(p)) throw new PeftError('INVALID_CONFIG', `DIFF_PRUNING: ${base.constructor.name} has no parameter "${p}"`);
    }
    this.options.set(name, opts);
    if (projected) {
      const indices = new ParameterDict();
      const values = new ParameterDict();
      for (const p of opts.parameters) {
        const w = this.baseParam(p);
        const k = keptCount(opts.density, w.size);
        const idx = tf.tidy(() => tf.cast(tf.floor(tf.mul(tf.range(0, k, 1, 'float32'), w.size / Math.max(k, 1))), 'int32'));
        pinFrozen(indices.set(p, idx, false));
        idx.dispose();
        const v = tf.zeros([k], w.dtype);
        values.set(p, v);
        v.dispose();
      }
      this.dict('indices').set(name, indices);
      this.dict('values').set(name, values);
    } else {
      const delta = new ParameterDict();
      const logAlpha = new ParameterDict();
      for (const p of opts.parameters) {
        const w = this.baseParam(p);
        const d = tf.zerosLike(w);
        delta.set(p, d);
        d.dispose();
        const a = tf.fill(w.shape, opts.initLogAlpha, 'float32');
        logAlpha.set(p, a);
        a.dispose();
      }
      this.dict('delta').set(name, delta);
      this.dict('log_alpha').set(name, logAlpha);
      if (opts.structured) {
        const group = new ParameterDict();
        for (const p of opts.parameters) {
          const g = tf.fill([1], opts.initLogAlpha, 'float32');
          group.set(p, g);
          g.dispose();
        }
        this.dict('group_log_alpha').set(name, group);
      }
    }
  }

  /** The gated adapter's log α of parameter `p` (undefined when projected). */
  logAlpha(name: string, p: string): tf.Variable | undefined {
    return this.dict('log_alpha').get(name)?.get(p);
  }

  /** A structured gated adapter's group log α of parameter `p`, [1] (undefined otherwise). */
  groupLogAlpha(name: string, p: string): tf.Variable | undefined {
    return this.dict('group_log_alpha').get(name)?.get(p);
  }

  /**
   * Adapter `name`'s diff of base parameter `p`, as a dense tensor of its shape: δ ⊙ z (⊙ z_g when structured; the
   * gates sampled when `sample`, else ẑ) when gated, the scattered values when projected.
   */
  diff(name: string, p: string, sample: boolean): tf.Tensor {
    const opts = this.options.get(name)!;
    const shape = this.baseParam(p).shape;
    if (this.isProjected(name)) return scatterDiff(this.dict('indices').get(name)!.get(p)!, this.dict('values').get(name)!.get(p)!, shape);
    const delta = this.dict('delta').get(name)!.get(p)!;
    const gate = (logAlpha: tf.Tensor) => (sample ? sampleGate(logAlpha, opts.gate) : deterministicGate(logAlpha, opts.gate));
    const group = this.groupLogAlpha(name, p);
    return tf.tidy(() => {
      const gated = tf.mul(delta, gate(this.dict('log_alpha').get(name)!.get(p)!));
      return group ? tf.mul(gated, gate(group)) : gated;
    });
  }

  /**
   * Turns gated adapter `name` into its projection: per parameter, the round(density · numel) entries of largest
   * |δ ⊙ ẑ (⊙ ẑ_g)| become the fixed mask (indices) and their values the trainable values. δ and the log α are disposed.
   */
  project(name: string): void {
    if (!this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer has no diff pruning adapter "${name}"`);
    if (this.isProjected(name)) return;
    if (this.mergedAdapters.includes(name)) throw new PeftError('INVALID_ARGUMENT', `diff pruning adapter "${name}" is merged; unmerge before projecting it`);
    const opts = this.options.get(name)!;
    const indices = new ParameterDict();
    const values = new ParameterDict();
    const trainable = [...this.dict('delta').get(name)!.ownParameters()].some(([, v]) => v.trainable);
    for (const p of opts.parameters) {
      const d = this.diff(name, p, false);
      const proj = projectDiff(d, opts.density);
      d.dispose();
      pinFrozen(indices.set(p, proj.indices, false));
      values.set(p, proj.values, trainable);
      tf.dispose([proj.indices, proj.values]);
    }
    this.dict('delta').delete(name);
    this.dict('log_alpha').delete(name);
    if (this.dict('group_log_alpha').has(name)) this.dict('group_log_alpha').delete(name);
    this.dict('indices').set(name, indices);
    this.dict('values').set(name, values);
  }

  private merged1(name: string, p: string): tf.Tensor {
    return tf.tidy(() => {
      const w = this.baseParam(p);
      return tf.add(w, this.diff(name, p, false));
    });
  }

  protected mergeOne(name: string): void {
    for (const p of this.options.get(name)!.parameters) {
      const m = this.merged1(name, p);
      this.baseParam(p).assign(m);
      m.dispose();
    }
  }

  protected override async mergeOneChecked(name: string): Promise<void> {
    const merged: [string, tf.Tensor][] = [];
    try {
      for (const p of this.options.get(name)!.parameters) {
        const m = this.merged1(name, p);
        merged.push([p, m]);
        await assertFiniteMerge(m, 'diff pruning', name, { keep: true, what: `base ${p}` });
      }
      for (const [p, m] of merged) this.baseParam(p).assign(m);
    } finally {
      tf.dispose(merged.map(([, m]) => m));
    }
  }

  protected unmergeOne(name: string): void {
    for (const p of this.options.get(name)!.parameters) {
      const w = this.baseParam(p);
      const m = tf.tidy(() => tf.sub(w, this.diff(name, p, false)));
      w.assign(m);
      m.dispose();
    }
  }

  protected deleteOne(name: string): void {
    for (const kind of DICTS) if (this.dict(kind).has(name)) this.dict(kind).delete(name);
    this.options.delete(name);
  }

  forward(x: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(x);
    if (bypassed) return bypassed;
    const active = this.activeAdapters.filter((n) => this.has(n));
    if (!active.length) return this.baseLayer.forward(x);
    const inner = this.getBaseLayer() as unknown as ParamSlots & Module & Layer;
    return tf.tidy(() => {
      // W_eff = W + Σ diffs of the active adapters, put in W's slot for the module's own forward
      const own = new Map<string, tf.Variable | tf.Tensor>();
      for (const n of active) {
        for (const p of this.options.get(n)!.parameters) {
          if (!own.has(p)) own.set(p, inner._params.get(p)!);
        }
      }
      const eff = new Map<string, tf.Tensor>();
      for (const n of active) {
        for (const p of this.options.get(n)!.parameters) eff.set(p, tf.add(eff.get(p) ?? own.get(p)!, this.diff(n, p, this.training)));
      }
      for (const [p, t] of eff) inner._params.set(p, t);
      try {
        return this.baseLayer.forward(x);
      } finally {
        for (const [p, v] of own) inner._params.set(p, v);
      }
    });
  }
}
