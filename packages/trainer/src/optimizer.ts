import * as tf from '@tensorflow/tfjs';
import { PeftError } from '@peftjs/core';
import { gradNormWebgpu } from './gradnorm_webgpu';
import { adamwStepWebgpu, canFuseAdamW, type FusedAdamWParam } from './adamw_webgpu';

export type NamedParams = [name: string, variable: tf.Variable][];

/** Backends whose tensors live in host memory (reads are cheap there). */
export const HOST_BACKENDS: ReadonlySet<string> = new Set(['cpu', 'wasm', 'tensorflow']);

/** Options of one optimizer step. */
export interface StepOptions {
  /**
   * A scalar on the device (bool, or a number: 0 skips, anything else applies): where it is false the
   * step changes nothing — parameters, state and step count stay as they were. It is never read back,
   * so a trainer can skip a non-finite step without waiting for the GPU. Honoured by optimizers that
   * declare `supportsApply`; for others the Trainer reads it and calls step only when it is true.
   */
  apply?: tf.Scalar;
}

/** An optimizer over named variables, whose state is named tensors (saved in a checkpoint as safetensors). */
export interface Optimizer {
  readonly name: string;
  /** Applies one update with learning rate `lr`; grads by parameter name (missing: no gradient, skipped). */
  step(grads: Record<string, tf.Tensor>, lr: number, opts?: StepOptions): void;
  /** true when step() honours `opts.apply` (the built-in AdamW and SGD do). */
  readonly supportsApply?: boolean;
  /**
   * Optimizer steps taken. After gated steps (`opts.apply`) it counts every step issued until `sync()`
   * reads how many were applied.
   */
  readonly stepCount: number;
  /** Reads device-side counters after gated steps so that stepCount and stateJson are exact (asynchronously). */
  sync?(): Promise<void>;
  /** The state as named tensors (the live variables; copy before disposing anything). */
  stateTensors(): Record<string, tf.Tensor>;
  /** Scalars of the state (step count, hyper-parameters), saved as JSON. */
  stateJson(): Record<string, unknown>;
  loadState(tensors: Record<string, tf.Tensor>, json: Record<string, unknown>, source?: string): void;
  dispose(): void;
}

/** `apply` as a bool scalar (numbers: non-zero is true). */
function applyCondition(apply: tf.Scalar): tf.Scalar {
  return apply.dtype === 'bool' ? apply : (tf.notEqual(apply, 0) as tf.Scalar);
}

/**
 * The step count of an optimizer whose steps may be gated on the device. `known` is exact as of the last
 * sync; `issued` gated steps have run since, of which the device variable knows how many were applied.
 */
class StepCounter {
  known = 0;
  issued = 0;
  private dev: tf.Variable | null = null;

  /** Steps taken (an upper bound while gated steps are unsynced). */
  get value(): number {
    return this.known + this.issued;
  }

  /** The device count after a gated step: old count + apply (an int32 scalar, kept by the caller's tidy). */
  gatedIncrement(cond: tf.Scalar): tf.Scalar {
    const dev = this.device();
    const next = tf.add(dev, tf.cast(cond, 'int32')) as tf.Scalar;
    dev.assign(next);
    this.issued++;
    return next;
  }

  /** The device count before this step (for "is this the first applied step"). */
  device(): tf.Variable {
    this.dev ??= tf.tidy(() => tf.variable(tf.scalar(this.known, 'int32'), false, undefined, 'int32'));
    return this.dev;
  }

  increment(): number {
    this.known++;
    this.setDevice(this.known);
    return this.known;
  }

  private setDevice(n: number): void {
    if (this.dev) tf.tidy(() => this.dev!.assign(tf.scalar(n, 'int32')));
  }

  async sync(): Promise<void> {
    if (!this.issued || !this.dev) return;
    this.known = (await this.dev.data())[0];
    this.issued = 0;
  }

  set(n: number): void {
    this.known = n;
    this.issued = 0;
    this.setDevice(n);
  }

  dispose(): void {
    this.dev?.dispose();
    this.dev = null;
  }
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/**
 * The scalars of one AdamW step: numbers when the step count is known, device scalars picked on the GPU
 * when the step is gated (the step count then lives on the device).
 */
export interface AdamWStepScalars {
  /** p·decay before the update (decoupled weight decay), null when there is none. */
  decay: number | null;
  beta1: number;
  beta2: number;
  eps: number;
  /** lr / (1 − β1ᵗ). */
  stepSize: number | tf.Scalar;
  /** √(1 − β2ᵗ). */
  bc2Sqrt: number | tf.Scalar;
  /** When set, the update is kept only where this is true. */
  apply?: tf.Scalar;
}

/**
 * torch.optim.AdamW, step for step: decoupled weight decay p ← p·(1 − lr·wd) before the Adam update;
 * m ← lerp(m, g, 1 − β1); v ← β2·v + (1 − β2)·g²; p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
 * The moments are tf.Variables named `exp_avg.<param>` / `exp_avg_sq.<param>` (torch's names).
 *
 * A gated step (`opts.apply`) keeps the step count on the device and picks the bias corrections of the
 * possible step counts (computed in float64 as for an ungated step) by that count, so an applied gated
 * step is bit-identical to an ungated one.
 */
export class AdamW implements Optimizer {
  readonly name = 'adamw';
  readonly supportsApply = true;
  private readonly counter = new StepCounter();
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;

  constructor(
    private readonly params: NamedParams,
    opts: AdamWOptions = {},
  ) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    // in a tidy: tf.variable shares the initial tensor's data, which would otherwise stay alive as a stray tensor
    tf.tidy(() => {
      for (const [n, p] of params) {
        this.m.set(n, tf.variable(tf.zerosLike(p), false, undefined, p.dtype));
        this.v.set(n, tf.variable(tf.zerosLike(p), false, undefined, p.dtype));
      }
    });
  }

  get stepCount(): number {
    return this.counter.value;
  }

  async sync(): Promise<void> {
    await this.counter.sync();
  }

  step(grads: Record<string, tf.Tensor>, lr: number, opts: StepOptions = {}): void {
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this;
    const decay = wd !== 0 && lr !== 0 ? 1 - lr * wd : null;
    tf.tidy(() => {
      let s: AdamWStepScalars;
      // after unsynced gated steps the count is only known on the device: gate this step too (always applied)
      const apply = opts.apply ?? (this.counter.issued ? tf.scalar(true, 'bool') : undefined);
      if (!apply) {
        const t = this.counter.increment();
        s = { decay, beta1: b1, beta2: b2, eps, stepSize: lr / (1 - b1 ** t), bc2Sqrt: Math.sqrt(1 - b2 ** t) };
      } else {
        const cond = applyCondition(apply);
        // the step count after this step is known + 1 … known + issued + 1; its bias corrections, in float64
        const base = this.counter.known;
        const n = this.counter.issued + 1;
        const stepSizes = new Float32Array(n);
        const bc2 = new Float32Array(n);
        for (let k = 0; k < n; k++) {
          const t = base + 1 + k;
          stepSizes[k] = lr / (1 - b1 ** t);
          bc2[k] = Math.sqrt(1 - b2 ** t);
        }
        const tNew = this.counter.gatedIncrement(cond);
        const idx = tf.clipByValue(tf.sub(tNew, base + 1), 0, n - 1).toInt() as tf.Scalar;
        s = {
          decay,
          beta1: b1,
          beta2: b2,
          eps,
          stepSize: tf.gather(tf.tensor1d(stepSizes), idx) as unknown as tf.Scalar,
          bc2Sqrt: tf.gather(tf.tensor1d(bc2), idx) as unknown as tf.Scalar,
          apply: cond,
        };
      }
      const todo: FusedAdamWParam[] = [];
      for (const [n, p] of this.params) {
        const g = grads[n];
        if (g) todo.push({ p, g, m: this.m.get(n)!, v: this.v.get(n)! });
      }
      // webgpu: one fused WGSL dispatch per 3–4 parameters (adamw_webgpu.ts), the same arithmetic
      if (this.updateParameter === AdamW.prototype.updateParameter && canFuseAdamW(todo)) adamwStepWebgpu(todo, s);
      else for (const { p, g, m, v } of todo) this.updateParameter(p, g, m, v, s);
    });
  }

  /** The update of one parameter and its two moments (inside step's tidy): where a fused kernel slots in. */
  protected updateParameter(p: tf.Variable, g: tf.Tensor, m: tf.Variable, v: tf.Variable, s: AdamWStepScalars): void {
    const decayed = s.decay !== null ? tf.mul(p, s.decay) : p;
    const m1 = tf.add(m, tf.mul(tf.sub(g, m), 1 - s.beta1));
    const v1 = tf.add(tf.mul(v, s.beta2), tf.mul(tf.square(g), 1 - s.beta2));
    const denom = tf.add(tf.div(tf.sqrt(v1), s.bc2Sqrt), s.eps);
    const p1 = tf.sub(decayed, tf.mul(tf.div(m1, denom), s.stepSize));
    if (s.apply) {
      m.assign(tf.where(s.apply, m1, m));
      v.assign(tf.where(s.apply, v1, v));
      p.assign(tf.where(s.apply, p1, p));
      return;
    }
    m.assign(m1);
    v.assign(v1);
    p.assign(p1);
  }

  stateTensors(): Record<string, tf.Tensor> {
    const out: Record<string, tf.Tensor> = {};
    for (const [n] of this.params) {
      out[`exp_avg.${n}`] = this.m.get(n)!;
      out[`exp_avg_sq.${n}`] = this.v.get(n)!;
    }
    return out;
  }

  stateJson(): Record<string, unknown> {
    return { name: this.name, step: this.counter.value, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
  }

  loadState(tensors: Record<string, tf.Tensor>, json: Record<string, unknown>, source = 'optimizer state'): void {
    if (json.name !== this.name) throw new PeftError('INVALID_FILE', `${source}: saved by optimizer "${String(json.name)}", not "${this.name}"`);
    assignState(this.params, tensors, { exp_avg: this.m, exp_avg_sq: this.v }, source);
    this.counter.set(Number(json.step) || 0);
  }

  dispose(): void {
    tf.dispose([...this.m.values(), ...this.v.values()]);
    this.counter.dispose();
  }
}

export interface SgdOptions {
  momentum?: number;
  weightDecay?: number;
}

/** torch.optim.SGD (dampening 0, no Nesterov): g ← g + wd·p; buf ← μ·buf + g (buf = g at first); p ← p − lr·buf. */
export class SGD implements Optimizer {
  readonly name = 'sgd';
  readonly supportsApply = true;
  private readonly counter = new StepCounter();
  private readonly buf = new Map<string, tf.Variable>();
  readonly momentum: number;
  readonly weightDecay: number;

  constructor(
    private readonly params: NamedParams,
    opts: SgdOptions = {},
  ) {
    this.momentum = opts.momentum ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
    if (this.momentum) tf.tidy(() => params.forEach(([n, p]) => this.buf.set(n, tf.variable(tf.zerosLike(p), false))));
  }

  get stepCount(): number {
    return this.counter.value;
  }

  async sync(): Promise<void> {
    await this.counter.sync();
  }

  step(grads: Record<string, tf.Tensor>, lr: number, opts: StepOptions = {}): void {
    tf.tidy(() => {
      const apply = opts.apply ?? (this.counter.issued ? tf.scalar(true, 'bool') : undefined);
      let cond: tf.Scalar | undefined;
      let first: boolean | tf.Scalar;
      if (!apply) {
        first = this.counter.known === 0;
        this.counter.increment();
      } else {
        cond = applyCondition(apply);
        first = this.momentum ? (tf.equal(this.counter.device(), 0) as tf.Scalar) : false;
        this.counter.gatedIncrement(cond);
      }
      for (const [n, p] of this.params) {
        let g = grads[n];
        if (!g) continue;
        if (this.weightDecay) g = tf.add(g, tf.mul(p, this.weightDecay));
        if (this.momentum) {
          const b = this.buf.get(n)!;
          const b1 = first === true ? g : first === false ? tf.add(tf.mul(b, this.momentum), g) : tf.where(first, g, tf.add(tf.mul(b, this.momentum), g));
          b.assign(cond ? tf.where(cond, b1, b) : b1);
          g = b1;
        }
        const p1 = tf.sub(p, tf.mul(g, lr));
        p.assign(cond ? tf.where(cond, p1, p) : p1);
      }
    });
  }

  stateTensors(): Record<string, tf.Tensor> {
    return Object.fromEntries([...this.buf].map(([n, b]) => [`momentum_buffer.${n}`, b]));
  }

  stateJson(): Record<string, unknown> {
    return { name: this.name, step: this.counter.value, momentum: this.momentum, weightDecay: this.weightDecay };
  }

  loadState(tensors: Record<string, tf.Tensor>, json: Record<string, unknown>, source = 'optimizer state'): void {
    if (json.name !== this.name) throw new PeftError('INVALID_FILE', `${source}: saved by optimizer "${String(json.name)}", not "${this.name}"`);
    if (this.momentum) assignState(this.params, tensors, { momentum_buffer: this.buf }, source);
    this.counter.set(Number(json.step) || 0);
  }

  dispose(): void {
    tf.dispose([...this.buf.values()]);
    this.counter.dispose();
  }
}

function assignState(params: NamedParams, tensors: Record<string, tf.Tensor>, slots: Record<string, Map<string, tf.Variable>>, source: string): void {
  for (const [slot, map] of Object.entries(slots)) {
    for (const [n] of params) {
      const key = `${slot}.${n}`;
      const t = tensors[key];
      const target = map.get(n)!;
      if (!t) throw new PeftError('INVALID_FILE', `${source}: missing tensor "${key}" (a checkpoint of another model or adapter?)`);
      if (!tf.util.arraysEqual(t.shape, target.shape)) {
        throw new PeftError('SHAPE_MISMATCH', `${source}: tensor "${key}" has shape [${t.shape}] but the parameter is [${target.shape}]`);
      }
      target.assign(t);
    }
  }
}

/** The global L2 norm of all gradients, on the device (a new scalar; 0 without gradients). */
export function gradNormTensor(grads: Record<string, tf.Tensor>): tf.Scalar {
  const names = Object.keys(grads);
  if (!names.length) return tf.scalar(0);
  if (tf.getBackend() === 'webgpu') return gradNormWebgpu(names.map((n) => grads[n]));
  return tf.tidy(() => tf.sqrt(sumAll(names.map((n) => tf.sum(tf.square(grads[n]))))) as tf.Scalar);
}

/**
 * tf.addN, in groups of at most 8 inputs off the host backends: tfjs-webgpu's AddN returns wrong sums
 * for 16 inputs (a binding limit); the cpu and wasm kernels take any number, and keep their exact sums.
 */
function sumAll(xs: tf.Tensor[]): tf.Tensor {
  if (HOST_BACKENDS.has(tf.getBackend()) || xs.length <= 8) return tf.addN(xs);
  let acc = tf.addN(xs.slice(0, 8));
  for (let i = 8; i < xs.length; i += 7) acc = tf.addN([acc, ...xs.slice(i, i + 7)]);
  return acc;
}

/** Clips by a norm already read: min(1, maxNorm / (norm + 1e-6)) in float64, the grads unchanged when ≥ 1. */
export function clipByNorm(grads: Record<string, tf.Tensor>, norm: number, maxNorm: number): Record<string, tf.Tensor> {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) return grads;
  const coef = Math.min(1, maxNorm / (norm + 1e-6));
  if (coef >= 1) return grads;
  const out: Record<string, tf.Tensor> = {};
  for (const n of Object.keys(grads)) out[n] = tf.mul(grads[n], coef);
  return out;
}

/**
 * torch.nn.utils.clip_grad_norm_: the global L2 norm of all gradients; when maxNorm > 0 every gradient
 * is scaled by min(1, maxNorm / (norm + 1e-6)). Resolves to the norm before clipping (read
 * asynchronously) and the clipped grads (new tensors where scaled; the caller disposes the inputs).
 * `clipGradNormOnDevice` does the same without reading anything.
 */
export async function clipGradNorm(grads: Record<string, tf.Tensor>, maxNorm: number): Promise<{ norm: number; grads: Record<string, tf.Tensor> }> {
  if (!Object.keys(grads).length) return { norm: 0, grads };
  const normT = gradNormTensor(grads);
  const norm = (await normT.data())[0];
  normT.dispose();
  return { norm, grads: clipByNorm(grads, norm, maxNorm) };
}

/**
 * clip_grad_norm_ on the device: the norm stays a tensor and the scale min(1, maxNorm / (norm + 1e-6))
 * (float32) multiplies every gradient on the GPU. Returns new tensors (the caller disposes the inputs
 * and the outputs); with maxNorm 0 or Infinity the grads come back as given.
 */
export function clipGradNormOnDevice(grads: Record<string, tf.Tensor>, maxNorm: number): { norm: tf.Scalar; grads: Record<string, tf.Tensor> } {
  const norm = gradNormTensor(grads);
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm) || !Object.keys(grads).length) return { norm, grads };
  const out = tf.tidy(() => {
    const coef = tf.minimum(1, tf.div(maxNorm, tf.add(norm, 1e-6)));
    return Object.fromEntries(Object.keys(grads).map((n) => [n, tf.mul(grads[n], coef)]));
  });
  return { norm, grads: out };
}
