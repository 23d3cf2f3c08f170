import * as tf from '@tensorflow/tfjs';
import { PeftError } from '@peftjs/core';

export type NamedParams = [name: string, variable: tf.Variable][];

/** An optimizer over named variables, whose state is named tensors (saved in a checkpoint as safetensors). */
export interface Optimizer {
  readonly name: string;
  /** Applies one update with learning rate `lr`; grads by parameter name (missing: no gradient, skipped). */
  step(grads: Record<string, tf.Tensor>, lr: number): void;
  /** Optimizer steps taken. */
  readonly stepCount: number;
  /** The state as named tensors (the live variables; copy before disposing anything). */
  stateTensors(): Record<string, tf.Tensor>;
  /** Scalars of the state (step count, hyper-parameters), saved as JSON. */
  stateJson(): Record<string, unknown>;
  loadState(tensors: Record<string, tf.Tensor>, json: Record<string, unknown>, source?: string): void;
  dispose(): void;
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/**
 * torch.optim.AdamW, step for step: decoupled weight decay p ← p·(1 − lr·wd) before the Adam update;
 * m ← lerp(m, g, 1 − β1); v ← β2·v + (1 − β2)·g²; p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
 * The moments are tf.Variables named `exp_avg.<param>` / `exp_avg_sq.<param>` (torch's names).
 */
export class AdamW implements Optimizer {
  readonly name = 'adamw';
  private t = 0;
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
    for (const [n, p] of params) {
      this.m.set(n, tf.variable(tf.zerosLike(p), false, undefined, p.dtype));
      this.v.set(n, tf.variable(tf.zerosLike(p), false, undefined, p.dtype));
    }
  }

  get stepCount(): number {
    return this.t;
  }

  step(grads: Record<string, tf.Tensor>, lr: number): void {
    this.t++;
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this;
    const bc1 = 1 - b1 ** this.t;
    const bc2Sqrt = Math.sqrt(1 - b2 ** this.t);
    const stepSize = lr / bc1;
    tf.tidy(() => {
      for (const [n, p] of this.params) {
        const g = grads[n];
        if (!g) continue;
        const m = this.m.get(n)!;
        const v = this.v.get(n)!;
        const decayed = wd !== 0 && lr !== 0 ? tf.mul(p, 1 - lr * wd) : p;
        const m1 = tf.add(m, tf.mul(tf.sub(g, m), 1 - b1));
        const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2));
        const denom = tf.add(tf.div(tf.sqrt(v1), bc2Sqrt), eps);
        const p1 = tf.sub(decayed, tf.mul(tf.div(m1, denom), stepSize));
        m.assign(m1);
        v.assign(v1);
        p.assign(p1);
      }
    });
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
    return { name: this.name, step: this.t, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
  }

  loadState(tensors: Record<string, tf.Tensor>, json: Record<string, unknown>, source = 'optimizer state'): void {
    if (json.name !== this.name) throw new PeftError('INVALID_FILE', `${source}: saved by optimizer "${String(json.name)}", not "${this.name}"`);
    assignState(this.params, tensors, { exp_avg: this.m, exp_avg_sq: this.v }, source);
    this.t = Number(json.step) || 0;
  }

  dispose(): void {
    tf.dispose([...this.m.values(), ...this.v.values()]);
  }
}

export interface SgdOptions {
  momentum?: number;
  weightDecay?: number;
}

/** torch.optim.SGD (dampening 0, no Nesterov): g ← g + wd·p; buf ← μ·buf + g (buf = g at first); p ← p − lr·buf. */
export class SGD implements Optimizer {
  readonly name = 'sgd';
  private t = 0;
  private readonly buf = new Map<string, tf.Variable>();
  readonly momentum: number;
  readonly weightDecay: number;

  constructor(
    private readonly params: NamedParams,
    opts: SgdOptions = {},
  ) {
    this.momentum = opts.momentum ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
    if (this.momentum) for (const [n, p] of params) this.buf.set(n, tf.variable(tf.zerosLike(p), false));
  }

  get stepCount(): number {
    return this.t;
  }

  step(grads: Record<string, tf.Tensor>, lr: number): void {
    const first = this.t === 0;
    this.t++;
    tf.tidy(() => {
      for (const [n, p] of this.params) {
        let g = grads[n];
        if (!g) continue;
        if (this.weightDecay) g = tf.add(g, tf.mul(p, this.weightDecay));
        if (this.momentum) {
          const b = this.buf.get(n)!;
          const b1 = first ? g : tf.add(tf.mul(b, this.momentum), g);
          b.assign(b1);
          g = b1;
        }
        p.assign(tf.sub(p, tf.mul(g, lr)));
      }
    });
  }

  stateTensors(): Record<string, tf.Tensor> {
    return Object.fromEntries([...this.buf].map(([n, b]) => [`momentum_buffer.${n}`, b]));
  }

  stateJson(): Record<string, unknown> {
    return { name: this.name, step: this.t, momentum: this.momentum, weightDecay: this.weightDecay };
  }

  loadState(tensors: Record<string, tf.Tensor>, json: Record<string, unknown>, source = 'optimizer state'): void {
    if (json.name !== this.name) throw new PeftError('INVALID_FILE', `${source}: saved by optimizer "${String(json.name)}", not "${this.name}"`);
    if (this.momentum) assignState(this.params, tensors, { momentum_buffer: this.buf }, source);
    this.t = Number(json.step) || 0;
  }

  dispose(): void {
    tf.dispose([...this.buf.values()]);
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

/**
 * torch.nn.utils.clip_grad_norm_: the global L2 norm of all gradients; when maxNorm > 0 every gradient
 * is scaled by min(1, maxNorm / (norm + 1e-6)). Returns the norm before clipping and the clipped grads
 * (new tensors where scaled; the caller disposes the inputs).
 */
export function clipGradNorm(grads: Record<string, tf.Tensor>, maxNorm: number): { norm: number; grads: Record<string, tf.Tensor> } {
  const names = Object.keys(grads);
  if (!names.length) return { norm: 0, grads };
  const normT = tf.tidy(() => tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n]))))));
  const norm = normT.dataSync()[0];
  normT.dispose();
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) return { norm, grads };
  const coef = Math.min(1, maxNorm / (norm + 1e-6));
  if (coef >= 1) return { norm, grads };
  const out: Record<string, tf.Tensor> = {};
  for (const n of names) out[n] = tf.mul(grads[n], coef);
  return { norm, grads: out };
}
