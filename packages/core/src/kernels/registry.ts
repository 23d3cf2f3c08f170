import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../errors';

/**
 * The GPU kernel registry: named ops with a differentiable reference made of tfjs ops, and optional
 * per-backend fast paths registered as real tfjs kernels (registerKernel) under a namespaced name.
 * When the active backend has a fast path, the op runs it through the engine (so it is taped and its
 * gradient comes from registerGradient); otherwise it runs the reference, which tfjs differentiates.
 */

export type TensorInputs = Record<string, tf.Tensor | undefined>;
export type OpAttrs = Record<string, number | boolean | string | number[]>;

export interface OpDefinition<I extends TensorInputs, A extends OpAttrs> {
  /** Namespaced kernel name, e.g. `peftjs.LoraLinear`. */
  name: string;
  /** Input names in a fixed order; optional inputs may be left undefined. */
  inputNames: readonly (keyof I & string)[];
  /** The reference: tfjs ops only, always available, differentiable. */
  reference: (inputs: I, attrs: A) => tf.Tensor;
  /** Shapes for the conformance helper's random inputs. */
  describe?: string;
}

export interface FastPath<I extends TensorInputs, A extends OpAttrs> {
  backendName: string;
  /** Runs on the backend's data; receives the backend instance as tfjs kernels do. */
  kernelFunc: (args: { inputs: I; attrs: A; backend: unknown }) => tf.TensorInfo;
  /**
   * The gradient of the fast path: dy and the saved inputs → one gradient per present input.
   * Defaults to the vector-Jacobian product of the reference.
   */
  gradient?: (dy: tf.Tensor, inputs: I, attrs: A) => Partial<Record<keyof I & string, tf.Tensor>>;
}

export interface Op<I extends TensorInputs, A extends OpAttrs> {
  (inputs: I, attrs: A): tf.Tensor;
  readonly definition: OpDefinition<I, A>;
  /** Backends that have a registered fast path for this op. */
  fastPathBackends(): string[];
  /** Runs the reference whatever the backend. */
  reference(inputs: I, attrs: A): tf.Tensor;
}

interface OpState {
  def: OpDefinition<TensorInputs, OpAttrs>;
  fast: Map<string, FastPath<TensorInputs, OpAttrs>>;
  gradientRegistered: boolean;
}

const ops = new Map<string, OpState>();
let fastPathsEnabled = true;

/** Turns every fast path off (or on): a debugging switch and what the conformance helper uses. */
export function setFastPathsEnabled(on: boolean): void {
  fastPathsEnabled = on;
}

function vjpOfReference(def: OpDefinition<TensorInputs, OpAttrs>, present: string[], inputs: TensorInputs, attrs: OpAttrs, dy: tf.Tensor) {
  const f = (...xs: tf.Tensor[]) => {
    const all: TensorInputs = { ...inputs };
    present.forEach((n, i) => (all[n] = xs[i]));
    return def.reference(all, attrs);
  };
  // tfjs's engine keeps one tape: a gradient computed inside a backward pass replaces the outer tape
  // and then clears it. Keep the outer tape aside while the reference's VJP runs.
  const state = (tf.engine() as unknown as { state: { activeTape: unknown } }).state;
  const outerTape = state.activeTape;
  let gs: tf.Tensor[];
  try {
    gs = tf.grads(f)(present.map((n) => inputs[n]!), dy);
  } finally {
    state.activeTape = outerTape;
  }
  return Object.fromEntries(present.map((n, i) => [n, gs[i]]));
}

export function defineOp<I extends TensorInputs, A extends OpAttrs>(def: OpDefinition<I, A>): Op<I, A> {
  if (ops.has(def.name)) throw new PeftError('REGISTRY', `kernel op "${def.name}" is already defined`);
  const state: OpState = { def: def as unknown as OpDefinition<TensorInputs, OpAttrs>, fast: new Map(), gradientRegistered: false };
  ops.set(def.name, state);
  const call = ((inputs: I, attrs: A) => {
    const backend = tf.getBackend();
    if (fastPathsEnabled && state.fast.has(backend)) {
      const present: Record<string, tf.Tensor> = {};
      for (const n of def.inputNames) if (inputs[n]) present[n] = inputs[n]!;
      return tf.engine().runKernel(def.name, present as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
    }
    return def.reference(inputs, attrs);
  }) as Op<I, A>;
  Object.defineProperty(call, 'definition', { value: def });
  call.fastPathBackends = () => [...state.fast.keys()];
  call.reference = (inputs, attrs) => def.reference(inputs, attrs);
  return call;
}

/** Registers a backend fast path of an op as a tfjs kernel, with its gradient. */
export function registerFastPath<I extends TensorInputs, A extends OpAttrs>(op: Op<I, A>, fast: FastPath<I, A>): void {
  const state = ops.get(op.definition.name);
  if (!state) throw new PeftError('REGISTRY', `kernel op "${op.definition.name}" is not defined`);
  const def = state.def;
  tf.registerKernel({
    kernelName: def.name,
    backendName: fast.backendName,
    kernelFunc: ({ inputs, attrs, backend }) =>
      fast.kernelFunc({ inputs: inputs as unknown as I, attrs: attrs as unknown as A, backend }),
  });
  state.fast.set(fast.backendName, fast as unknown as FastPath<TensorInputs, OpAttrs>);
  if (!state.gradientRegistered) {
    state.gradientRegistered = true;
    tf.registerGradient({
      kernelName: def.name,
      inputsToSave: [...def.inputNames],
      gradFunc: (dy, saved, attrs) => {
        const inputs: TensorInputs = {};
        def.inputNames.forEach((n, i) => (inputs[n] = saved[i]));
        const present = def.inputNames.filter((n) => inputs[n]);
        const own = state.fast.get(tf.getBackend())?.gradient;
        const g = own
          ? (own(dy as tf.Tensor, inputs, attrs as unknown as OpAttrs) as Record<string, tf.Tensor>)
          : vjpOfReference(def, present, inputs, attrs as unknown as OpAttrs, dy as tf.Tensor);
        return Object.fromEntries(present.map((n) => [n, () => g[n]]));
      },
    });
  }
}

export function listOps(): { name: string; fastPaths: string[] }[] {
  return [...ops.values()].map((s) => ({ name: s.def.name, fastPaths: [...s.fast.keys()] }));
}

export interface ConformanceReport {
  op: string;
  backend: string;
  forwardMaxAbsDiff: number;
  gradMaxAbsDiff: Record<string, number>;
  scale: number;
  ok: boolean;
}

/**
 * Checks a fast path against its reference on the current backend: forward output and the gradient
 * of a random linear functional of it, for every present input. Tolerance is relative to the
 * reference's max-abs.
 */
export async function checkConformance<I extends TensorInputs, A extends OpAttrs>(
  op: Op<I, A>,
  makeInputs: () => I,
  attrs: A,
  opts: { rtol?: number } = {},
): Promise<ConformanceReport> {
  const rtol = opts.rtol ?? 1e-4;
  const inputs = makeInputs();
  const present = op.definition.inputNames.filter((n) => inputs[n]);
  const run = (useFast: boolean) => {
    setFastPathsEnabled(useFast);
    try {
      return tf.tidy(() => {
        const y = op(inputs, attrs);
        const w = tf.randomNormal(y.shape, 0, 1, 'float32', 7);
        const f = (...xs: tf.Tensor[]) => {
          const all = { ...inputs } as TensorInputs;
          present.forEach((n, i) => (all[n] = xs[i]));
          return tf.sum(tf.mul(op(all as I, attrs), w));
        };
        const gs = tf.grads(f)(present.map((n) => inputs[n]!));
        return [y, ...gs];
      });
    } finally {
      setFastPathsEnabled(true);
    }
  };
  const ref = run(false);
  const fast = run(true);
  const maxAbs = async (t: tf.Tensor) => (await tf.max(tf.abs(t)).data())[0];
  const scale = Math.max(await maxAbs(ref[0]), 1e-6);
  const fwd = await maxAbs(tf.sub(ref[0], fast[0]));
  const gradMaxAbsDiff: Record<string, number> = {};
  let ok = fwd <= rtol * scale;
  for (let i = 0; i < present.length; i++) {
    const s = Math.max(await maxAbs(ref[i + 1]), 1e-6);
    const d = await maxAbs(tf.sub(ref[i + 1], fast[i + 1]));
    gradMaxAbsDiff[present[i]] = d / s;
    if (d > rtol * s) ok = false;
  }
  tf.dispose([...ref, ...fast, ...Object.values(inputs).filter(Boolean) as tf.Tensor[]]);
  return { op: op.definition.name, backend: tf.getBackend(), forwardMaxAbsDiff: fwd / scale, gradMaxAbsDiff, scale, ok };
}
