// AdaLoRA's whole math: the SVD-form layer (HF's SVDLinear), the orthogonal regulariser HF's
// AdaLoraModel.forward adds to the loss, and the RankAllocator that prunes singular values during training.
import * as tf from '@tensorflow/tfjs';
import {
  BaseTunerLayer,
  Conv1D,
  Dropout,
  Identity,
  Linear,
  ModuleDict,
  ParameterDict,
  PeftError,
  nextSeed,
  type PeftModel, assertFiniteMerge } from '@peftjs/core';
import { loraLinearOp } from './op';
import type { AdaLoraConfig } from './adalora_config';

type LinearLike = Linear | Conv1D;

export interface AdaLoraAdapterOptions {
  /** The number of singular values the layer holds (initR, or what a loaded rank_pattern keeps). */
  r: number;
  loraAlpha: number;
  scaling: number;
  /** HF's ranknum: the rank the adapter was created with (initR); the update is divided by ranknum + 1e-5. */
  ranknum: number;
  dropout: number;
  initLoraWeights: boolean | 'gaussian';
}

/**
 * AdaLoRA on a Linear (or GPT-2's Conv1D): the update is in SVD form P·Λ·Q with `lora_A` = Q [r, in]
 * (right singular vectors), `lora_E` = Λ [r, 1] (singular values), `lora_B` = P [out, r] (left singular
 * vectors), HF's tensor names: y = base(x) + (dropout(x)·(A ∘ E)ᵀ·Bᵀ) · scaling / (ranknum + 1e-5).
 * Pruning a rank sets its singular value to 0.
 */
export class AdaLoraLinear extends BaseTunerLayer {
  readonly peftType = 'ADALORA';
  readonly fanInFanOut: boolean;
  readonly r: Record<string, number> = {};
  readonly loraAlpha: Record<string, number> = {};
  readonly scaling: Record<string, number> = {};
  /** HF's ranknum (a constant; HF keeps it as a frozen parameter it never saves). */
  readonly ranknum: Record<string, number> = {};

  constructor(base: LinearLike | BaseTunerLayer, fanInFanOut: boolean) {
    super(base);
    this.fanInFanOut = fanInFanOut;
    const inner = this.getBaseLayer();
    if (!(inner instanceof Linear) && !(inner instanceof Conv1D)) {
      throw new PeftError('INVALID_ARGUMENT', `AdaLoraLinear wraps Linear or Conv1D, not ${inner.constructor.name}`);
    }
    this.registerModule('lora_A', new ParameterDict());
    this.registerModule('lora_B', new ParameterDict());
    this.registerModule('lora_E', new ParameterDict());
    this.registerModule('lora_dropout', new ModuleDict<Dropout | Identity>());
  }

  get loraA(): ParameterDict {
    return this.child('lora_A');
  }
  get loraB(): ParameterDict {
    return this.child('lora_B');
  }
  get loraE(): ParameterDict {
    return this.child('lora_E');
  }
  get loraDropout(): ModuleDict<Dropout | Identity> {
    return this.child('lora_dropout');
  }
  get inFeatures(): number {
    return (this.getBaseLayer() as LinearLike).inFeatures;
  }
  get outFeatures(): number {
    return (this.getBaseLayer() as LinearLike).outFeatures;
  }

  adapterNames(): string[] {
    return this.loraA.keys();
  }

  updateLayer(name: string, o: AdaLoraAdapterOptions): void {
    if (this.has(name)) throw new PeftError('INVALID_ARGUMENT', `layer already has an AdaLoRA adapter "${name}"`);
    if (!Number.isInteger(o.r) || o.r < 0) throw new PeftError('INVALID_CONFIG', `AdaLoRA: the rank of "${name}" must be an integer >= 0, got ${o.r}`);
    const { r } = o;
    this.r[name] = r;
    this.loraAlpha[name] = o.loraAlpha;
    this.scaling[name] = o.scaling;
    this.ranknum[name] = o.ranknum;
    this.loraDropout.set(name, o.dropout > 0 ? new Dropout(o.dropout) : new Identity());
    // HF: A, E, B ~ N(0, 1); with init_lora_weights (HF's default) E = 0 and A, B ~ N(0, 0.02), so the
    // adapted model starts as the base model.
    const std = o.initLoraWeights === false ? 1 : 0.02;
    const a = tf.randomNormal([r, this.inFeatures], 0, std, 'float32', nextSeed());
    const e = o.initLoraWeights === false ? tf.randomNormal([r, 1], 0, 1, 'float32', nextSeed()) : tf.zeros([r, 1]);
    const b = tf.randomNormal([this.outFeatures, r], 0, std, 'float32', nextSeed());
    this.loraA.set(name, a);
    this.loraE.set(name, e);
    this.loraB.set(name, b);
    tf.dispose([a, e, b]);
    this.training = this.baseLayer.training;
  }

  /** scaling / (ranknum + 1e-5), HF's factor (ranknum + 1e-5 as the float32 torch adds it in). */
  private factor(name: string): number {
    return this.scaling[name] / Math.fround(this.ranknum[name] + 1e-5);
  }

  /** HF's get_delta_weight: transpose(B·(A ∘ E), fan_in_fan_out) · scaling / (ranknum + 1e-5). */
  getDeltaWeight(name: string): tf.Tensor {
    return tf.tidy(() => {
      const A = this.loraA.get(name)!;
      const d = tf.mul(tf.matMul(this.loraB.get(name)!, tf.mul(A, this.loraE.get(name)!)), this.factor(name));
      return this.fanInFanOut ? tf.transpose(d) : d;
    });
  }

  private withDelta(name: string, sign: 1 | -1): tf.Tensor {
    const base = this.getBaseLayer() as LinearLike;
    return tf.tidy(() => (sign > 0 ? tf.add(base.weight, this.getDeltaWeight(name)) : tf.sub(base.weight, this.getDeltaWeight(name))));
  }

  protected mergeOne(name: string): void {
    if (!this.r[name]) return;
    const next = this.withDelta(name, 1);
    (this.getBaseLayer() as LinearLike).weight.assign(next);
    next.dispose();
  }

  /** safe_merge: the merged weight is checked for NaN/Inf (an asynchronous read) before it replaces the base weight. */
  protected override async mergeOneChecked(name: string): Promise<void> {
    if (!this.r[name]) return;
    const next = this.withDelta(name, 1);
    await assertFiniteMerge(next, 'AdaLoRA', name);
    (this.getBaseLayer() as LinearLike).weight.assign(next);
    next.dispose();
  }

  protected unmergeOne(name: string): void {
    if (!this.r[name]) return;
    const next = this.withDelta(name, -1);
    (this.getBaseLayer() as LinearLike).weight.assign(next);
    next.dispose();
  }

  /** Frees the state rank allocators keep about this layer (Module.dispose and unload call this). */
  disposeBuffers(): void {
    for (const a of allocatorsOf.get(this) ?? []) a.reset();
  }

  protected deleteOne(name: string): void {
    for (const d of [this.loraA, this.loraB, this.loraE, this.loraDropout]) if (d.has(name)) d.delete(name);
    delete this.r[name];
    delete this.loraAlpha[name];
    delete this.scaling[name];
    delete this.ranknum[name];
  }

  forward(x: tf.Tensor): tf.Tensor {
    const bypassed = this.bypass(x);
    if (bypassed) return bypassed;
    return tf.tidy(() => {
      let result = this.baseLayer.forward(x);
      for (const name of this.activeAdapters) {
        if (!this.has(name) || !this.r[name]) continue; // rank 0 (all pruned): no update
        const xd = this.loraDropout.get(name)!.forward(x);
        const AE = tf.mul(this.loraA.get(name)!, this.loraE.get(name)!);
        result = loraLinearOp({ base: result, x: xd, loraA: AE, loraB: this.loraB.get(name)! }, { scaling: this.factor(name) });
      }
      return result;
    });
  }
}

/** The AdaLoRA layers holding `adapterName`, by their path in the base model (`model.layers.0.self_attn.q_proj`). */
export function adaloraLayers(peft: PeftModel, adapterName: string): [string, AdaLoraLinear][] {
  const out: [string, AdaLoraLinear][] = [];
  for (const [path, m] of peft.model.namedModules()) if (m instanceof AdaLoraLinear && m.has(adapterName)) out.push([path, m]);
  return out;
}

/**
 * HF's orthogonal regulariser (AdaLoraModel.forward): the mean over every lora_A and lora_B of the adapter
 * of ‖A·Aᵀ − I‖_F and ‖Bᵀ·B − I‖_F (Frobenius norms, not squared), times orthRegWeight.
 */
export function orthogonalRegularizer(peft: PeftModel, adapterName: string, weight: number): tf.Scalar | null {
  const layers = adaloraLayers(peft, adapterName);
  if (!layers.length || weight === 0) return null;
  return tf.tidy(() => {
    let sum: tf.Scalar = tf.scalar(0);
    let n = 0;
    const fro = (cov: tf.Tensor) => tf.sqrt(tf.sum(tf.square(tf.sub(cov, tf.eye(cov.shape[0]!)))));
    for (const [, l] of layers) {
      const A = l.loraA.get(adapterName)!;
      const B = l.loraB.get(adapterName)!;
      n += 2;
      if (!l.r[adapterName]) continue; // an empty A·Aᵀ has norm 0 (it still counts, as in HF)
      sum = tf.add(sum, fro(tf.matMul(A, A, false, true))) as tf.Scalar;
      sum = tf.add(sum, fro(tf.matMul(B, B, true, false))) as tf.Scalar;
    }
    return tf.mul(tf.div(sum, n), weight) as tf.Scalar;
  });
}

/**
 * HF's RankAllocator: after each optimizer step, the importance of every entry of A, E, B is smoothed
 * (sensitivity |w·∇w| with an EMA of factor beta1, its uncertainty |I − Ī| with beta2); every deltaT steps of
 * the budgeting phase the singular values of the lowest triplet scores are set to 0 until the total rank
 * meets a cubic schedule from the initial budget (Σ initR) down to targetR per module at totalStep − tfinal,
 * where the final mask becomes config.rankPattern; later steps keep re-applying that mask.
 *
 * Everything is tensor ops; the masks are read (asynchronously, one read) only on the steps that mask.
 */
export class RankAllocator {
  private expAvgIpt = new Map<string, tf.Tensor>();
  private expAvgUnc = new Map<string, tf.Tensor>();
  readonly initBudget: number;
  readonly targetBudget: number;

  constructor(
    private readonly peft: PeftModel,
    private readonly adapterName: string,
    private readonly config: AdaLoraConfig,
  ) {
    for (const k of ['beta1', 'beta2'] as const) {
      const v = config[k];
      if (!(v > 0 && v < 1)) throw new PeftError('INVALID_CONFIG', `AdaLoraConfig: field "${k}" must be in (0, 1) for the rank allocator, got ${v}`);
    }
    const layers = adaloraLayers(peft, adapterName);
    // so that disposing the model (its layers' disposeBuffers) frees this allocator's tensors too
    for (const [, l] of layers) {
      if (!allocatorsOf.has(l)) allocatorsOf.set(l, new Set());
      allocatorsOf.get(l)!.add(this);
    }
    this.initBudget = layers.reduce((s, [, l]) => s + l.r[adapterName], 0);
    this.targetBudget = config.targetR * layers.length;
  }

  /** HF's budget_schedule: [budget, whether this step masks]. */
  budgetSchedule(step: number): [number, boolean] {
    const { tinit, tfinal } = this.config;
    const total = this.config.totalStep!;
    if (step <= tinit) return [this.initBudget, false];
    if (step > total - tfinal) return [this.targetBudget, true];
    const mul = 1 - (step - tinit) / (total - tfinal - tinit);
    return [Math.trunc((this.initBudget - this.targetBudget) * mul ** 3 + this.targetBudget), step % this.config.deltaT === 0];
  }

  /** HF's update_and_allocate(global_step) of AdaLoraModel, with the step's gradients. */
  async updateAndAllocate(step: number, grads: Record<string, tf.Tensor>, apply?: tf.Scalar): Promise<void> {
    const total = this.config.totalStep!;
    const tfinal = this.config.tfinal;
    if (step < total - tfinal) {
      this.updateIpt(grads, apply);
      const [budget, mask] = this.budgetSchedule(step);
      if (mask) await this.maskToBudget(budget, apply);
    } else if (step === total - tfinal) {
      await this.maskToBudget(this.budgetSchedule(step)[0], apply);
      this.reset();
    } else {
      this.maskUsingRankPattern(apply);
    }
  }

  /** The parameters the allocator scores, by kind, with the keys of the gradients (the PeftModel's names). */
  private modules(): { path: string; layer: AdaLoraLinear; key: (kind: 'A' | 'E' | 'B') => string; param: (kind: 'A' | 'E' | 'B') => tf.Variable }[] {
    const n = this.adapterName;
    return adaloraLayers(this.peft, n).map(([path, layer]) => ({
      path,
      layer,
      key: (kind) => `base_model.model.${path}.lora_${kind}.${n}`,
      param: (kind) => (kind === 'A' ? layer.loraA : kind === 'E' ? layer.loraE : layer.loraB).get(n)!,
    }));
  }

  private updateIpt(grads: Record<string, tf.Tensor>, apply?: tf.Scalar): void {
    const { beta1, beta2 } = this.config;
    for (const m of this.modules()) {
      for (const kind of ['A', 'E', 'B'] as const) {
        const key = m.key(kind);
        const g = grads[key];
        if (!g) throw new PeftError('INVALID_ARGUMENT', `AdaLoRA rank allocator: no gradient for "${key}" (is the adapter trainable?)`);
        const p = m.param(kind);
        const oldIpt = this.expAvgIpt.get(key);
        const oldUnc = this.expAvgUnc.get(key);
        const [ipt, unc] = tf.tidy(() => {
          const prevIpt = oldIpt ?? tf.zerosLike(p);
          const prevUnc = oldUnc ?? tf.zerosLike(p);
          const cur = tf.abs(tf.mul(p, g));
          const avg = tf.add(tf.mul(prevIpt, beta1), tf.mul(cur, 1 - beta1));
          const u = tf.add(tf.mul(prevUnc, beta2), tf.mul(tf.abs(tf.sub(cur, avg)), 1 - beta2));
          return apply ? [tf.where(apply.cast('bool'), avg, prevIpt), tf.where(apply.cast('bool'), u, prevUnc)] : [avg, u];
        });
        oldIpt?.dispose();
        oldUnc?.dispose();
        this.expAvgIpt.set(key, ipt);
        this.expAvgUnc.set(key, unc);
      }
    }
  }

  /** HF's mask_to_budget: zero the singular values of the lowest-scoring triplets so `budget` remain; sets config.rankPattern. */
  private async maskToBudget(budget: number, apply?: tf.Scalar): Promise<void> {
    const mods = this.modules();
    const score = (key: string) => {
      const a = this.expAvgIpt.get(key);
      const u = this.expAvgUnc.get(key);
      if (!a || !u) throw new PeftError('INVALID_ARGUMENT', `AdaLoRA rank allocator: no importance scores for "${key}" yet (masking before any update in this process, e.g. a run resumed from a checkpoint at totalStep − tfinal)`);
      return tf.mul(a, u);
    };
    const k = this.initBudget - budget;
    const keeps = tf.tidy(() => {
      const triplets = mods.map((m) => {
        const a = tf.mean(score(m.key('A')), 1); // [r]
        const b = tf.mean(score(m.key('B')), 0); // [r]
        return tf.add(score(m.key('E')).reshape([-1]), tf.add(a, b));
      });
      // the k-th smallest score (torch.kthvalue); HF masks every triplet at or below it
      const all = tf.concat(triplets);
      const threshold = k > 0 ? tf.neg(tf.topk(tf.neg(all), k).values.slice([k - 1], [1])) : tf.scalar(-Infinity).reshape([1]);
      return triplets.map((t) => tf.logicalNot(tf.lessEqual(t, threshold)).reshape([-1, 1]));
    });
    try {
      this.applyMasks(mods, keeps, apply);
      const flat = tf.tidy(() => tf.concat([...(apply ? [apply.reshape([1]).cast('float32')] : []), ...keeps.map((t) => t.reshape([-1]).cast('float32'))]));
      const values = await flat.data();
      flat.dispose();
      if (apply && values[0] === 0) return;
      let i = apply ? 1 : 0;
      const pattern: Record<string, boolean[]> = {};
      for (const [j, m] of mods.entries()) {
        const r = keeps[j].shape[0]!;
        pattern[`${m.path}.lora_E`] = Array.from(values.subarray(i, i + r), (v) => v !== 0);
        i += r;
      }
      this.config.rankPattern = pattern;
    } finally {
      tf.dispose(keeps);
    }
  }

  private applyMasks(mods: ReturnType<RankAllocator['modules']>, keeps: tf.Tensor[], apply?: tf.Scalar): void {
    mods.forEach((m, j) => {
      const E = m.param('E');
      const next = tf.tidy(() => {
        const masked = tf.where(keeps[j], E, tf.zerosLike(E));
        return apply ? tf.where(apply.cast('bool'), masked, E) : masked;
      });
      E.assign(next);
      next.dispose();
    });
  }

  /** HF's mask_using_rank_pattern (every step after the final allocation). */
  private maskUsingRankPattern(apply?: tf.Scalar): void {
    const pattern = this.config.rankPattern;
    if (!pattern) throw new PeftError('INVALID_CONFIG', 'AdaLoRA: a step after totalStep − tfinal but the config has no rankPattern: the final allocation never ran in this process (a run resumed from a checkpoint after totalStep − tfinal: the allocator state is not checkpointed; load the checkpoint\'s adapter_config.json rank_pattern into the config first)');
    const mods = this.modules();
    const keeps = mods.map((m) => {
      const bits = pattern[`${m.path}.lora_E`] ?? pattern[`${m.path}.lora_E.${this.adapterName}`];
      const r = m.layer.r[this.adapterName];
      if (!bits || bits.length !== r) {
        throw new PeftError('INVALID_CONFIG', `AdaLoraConfig: field "rankPattern" has ${bits ? `${bits.length} entries` : 'no entry'} for "${m.path}.lora_E" (the module holds ${r} ranks)`);
      }
      return tf.tensor2d(bits, [r, 1], 'bool');
    });
    try {
      this.applyMasks(mods, keeps, apply);
    } finally {
      tf.dispose(keeps);
    }
  }

  /** HF's reset_ipt: frees the importance averages. */
  reset(): void {
    tf.dispose([...this.expAvgIpt.values(), ...this.expAvgUnc.values()]);
    this.expAvgIpt.clear();
    this.expAvgUnc.clear();
  }
}

const allocators = new WeakMap<PeftModel, Map<string, RankAllocator>>();
/** The allocators scoring each layer (a layer's disposeBuffers resets them). */
const allocatorsOf = new WeakMap<AdaLoraLinear, Set<RankAllocator>>();

/**
 * HF's `model.base_model.update_and_allocate(step)` for a custom training loop: call it after each
 * `optimizer.step`, with the 0-based step and that step's gradients (keyed by the PeftModel's parameter
 * names). The Trainer does this itself (through `PeftModel.afterOptimizerStep`). A step of 0 starts a
 * new allocation.
 */
export async function updateAndAllocate(peft: PeftModel, step: number, grads: Record<string, tf.Tensor>, opts: { adapterName?: string; apply?: tf.Scalar } = {}): Promise<void> {
  const name = opts.adapterName ?? peft.activeAdapter;
  const config = peft.peftConfig[name] as AdaLoraConfig | undefined;
  if (!config || config.peftType !== 'ADALORA') throw new PeftError('INVALID_ARGUMENT', `updateAndAllocate: adapter "${name}" is not an AdaLoRA adapter`);
  if (config.inferenceMode) throw new PeftError('INVALID_ARGUMENT', `updateAndAllocate: adapter "${name}" is in inference mode (load it with isTrainable: true)`);
  let byName = allocators.get(peft);
  if (!byName) allocators.set(peft, (byName = new Map()));
  let alloc = byName.get(name);
  if (alloc && step === 0) {
    alloc.reset();
    alloc = undefined;
  }
  if (!alloc) byName.set(name, (alloc = new RankAllocator(peft, name, config)));
  await alloc.updateAndAllocate(step, grads, opts.apply);
}

/** Frees the rank allocator's state of a model (its importance averages), e.g. when training stops early. */
export function resetRankAllocator(peft: PeftModel): void {
  for (const a of allocators.get(peft)?.values() ?? []) a.reset();
  allocators.delete(peft);
}
