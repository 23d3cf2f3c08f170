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
  /**
   * Outputs of the fast paths saved for their gradients, by output index (tfjs's `outputsToSave`). A
   * fast path's kernelFunc may return `[out, ...aux]` (e.g. attention's per-row logsumexp): the op call
   * still returns `out` alone (the aux outputs are disposed), and the gradient receives the saved ones.
   */
  outputsToSave?: boolean[];
}

export interface FastPath<I extends TensorInputs, A extends OpAttrs> {
  backendName: string;
  /** Runs on the backend's data; receives the backend instance as tfjs kernels do. */
  kernelFunc: (args: { inputs: I; attrs: A; backend: unknown }) => tf.TensorInfo | tf.TensorInfo[];
  /**
   * The gradient of the fast path: dy and the saved inputs → one gradient per present input, either a
   * tensor or a thunk computing it. Thunks are evaluated only for inputs a gradient is asked for (tfjs
   * prunes inputs off the path to the sources: a frozen base weight costs nothing).
   * Defaults to the vector-Jacobian product of the reference. `outputs` are the forward's outputs named
   * in the definition's `outputsToSave` (by output index; undefined where not saved or not returned).
   */
  gradient?: (dy: tf.Tensor, inputs: I, attrs: A, outputs: (tf.Tensor | undefined)[]) => Partial<Record<keyof I & string, tf.Tensor | (() => tf.Tensor)>>;
  /** Labels for switching groups of fast paths off together (setBackendFastPaths' `tag`). */
  tags?: readonly string[];
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
  /** Kernel names registered for this op (one per set of present inputs). */
  variants: Set<string>;
  /** Fast paths switched off per backend (setBackendFastPaths). */
  parked: Map<string, FastPath<TensorInputs, OpAttrs>>;
}

const ops = new Map<string, OpState>();
let fastPathsEnabled = true;
/**
 * Tags parked per backend by setBackendFastPaths (ALL_TAGS: every fast path): a fast path registered
 * later (a method package imported after initBackend parked the wasm layout fast paths) is parked on
 * arrival, so the order of imports does not change which kernels run.
 */
const ALL_TAGS = Symbol('all fast paths');
const parkedTags = new Map<string, Set<string | typeof ALL_TAGS>>();

function isParked(backendName: string, fast: FastPath<TensorInputs, OpAttrs>): boolean {
  const parked = parkedTags.get(backendName);
  return !!parked && (parked.has(ALL_TAGS) || !!fast.tags?.some((t) => parked.has(t)));
}

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

/**
 * The tfjs kernel name for a call with `present` inputs: the op's name when every input is there, else
 * `<name>:<present inputs>` — tfjs saves a fixed list of inputs for the backward pass, so a call that
 * leaves an optional input out (a Linear without bias) runs under its own kernel name.
 */
function variantName(def: OpDefinition<TensorInputs, OpAttrs>, present: string[]): string {
  return present.length === def.inputNames.length ? def.name : `${def.name}:${present.join(',')}`;
}

function ensureVariant(state: OpState, present: string[]): string {
  const name = variantName(state.def, present);
  if (state.variants.has(name)) return name;
  state.variants.add(name);
  // parked fast paths get the kernel too: restoring one must find it registered
  for (const [backendName, fast] of [...state.fast, ...state.parked]) registerVariantKernel(name, backendName, fast);
  registerVariantGradient(state, name, present);
  return name;
}

function registerVariantKernel(name: string, backendName: string, fast: FastPath<TensorInputs, OpAttrs>): void {
  tf.registerKernel({
    kernelName: name,
    backendName,
    kernelFunc: ({ inputs, attrs, backend }) => fast.kernelFunc({ inputs: inputs as unknown as TensorInputs, attrs: attrs as unknown as OpAttrs, backend }),
  });
}

function registerVariantGradient(state: OpState, name: string, present: string[]): void {
  const def = state.def;
  const outputsToSave = def.outputsToSave ?? [];
  tf.registerGradient({
    kernelName: name,
    inputsToSave: [...present],
    ...(outputsToSave.length ? { outputsToSave: [...outputsToSave] } : {}),
    gradFunc: (dys, saved, attrs) => {
      const inputs: TensorInputs = {};
      present.forEach((n, i) => (inputs[n] = saved[i]));
      // a kernel with several outputs gets one dy per output (zeros for the aux ones): the op's output is the first
      const dy = (Array.isArray(dys) ? dys[0] : dys) as tf.Tensor;
      const nOut = Array.isArray(dys) ? dys.length : 1;
      const outputs: (tf.Tensor | undefined)[] = [];
      let next = present.length;
      for (let i = 0; i < nOut; i++) outputs.push(outputsToSave[i] ? (saved[next++] as tf.Tensor) : undefined);
      const own = state.fast.get(tf.getBackend())?.gradient;
      if (own) {
        const g = own(dy, inputs, attrs as unknown as OpAttrs, outputs) as Record<string, tf.Tensor | (() => tf.Tensor)>;
        return Object.fromEntries(present.map((n) => {
          const v = g[n];
          return [n, typeof v === 'function' ? v : () => v];
        }));
      }
      const g = vjpOfReference(def, present, inputs, attrs as unknown as OpAttrs, dy);
      return Object.fromEntries(present.map((n) => [n, () => g[n]]));
    },
  });
}

export function defineOp<I extends TensorInputs, A extends OpAttrs>(def: OpDefinition<I, A>): Op<I, A> {
  if (ops.has(def.name)) throw new PeftError('REGISTRY', `kernel op "${def.name}" is already defined`);
  const state: OpState = { def: def as unknown as OpDefinition<TensorInputs, OpAttrs>, fast: new Map(), variants: new Set(), parked: new Map() };
  ops.set(def.name, state);
  const call = ((inputs: I, attrs: A) => {
    const backend = tf.getBackend();
    if (fastPathsEnabled && state.fast.has(backend)) {
      const present: Record<string, tf.Tensor> = {};
      for (const n of def.inputNames) if (inputs[n]) present[n] = inputs[n]!;
      const kernel = ensureVariant(state, Object.keys(present));
      const out = tf.engine().runKernel(kernel, present as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor | tf.Tensor[];
      if (!Array.isArray(out)) return out;
      // aux outputs: what the gradient needs is saved (a clone) on the tape; the caller gets the first
      tf.dispose(out.slice(1));
      return out[0];
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
  const f = fast as unknown as FastPath<TensorInputs, OpAttrs>;
  const known = state.fast.has(fast.backendName) || state.parked.has(fast.backendName);
  state.fast.delete(fast.backendName);
  state.parked.delete(fast.backendName);
  (isParked(fast.backendName, f) ? state.parked : state.fast).set(fast.backendName, f);
  // variants already in use get this backend's kernel (tfjs refuses a second registration: unregister first)
  for (const name of state.variants) {
    if (known) tf.unregisterKernel(name, fast.backendName);
    registerVariantKernel(name, fast.backendName, f);
  }
  ensureVariant(state, [...state.def.inputNames]);
}

/**
 * Parks (or restores) the fast paths registered for one backend — all of them, or those carrying `tag` —,
 * e.g. the wasm matmul layout fast paths once a native matmul handles transposed operands itself. The
 * ops then run their references there. The choice holds for fast paths registered afterwards too.
 */
export function setBackendFastPaths(backendName: string, on: boolean, tag?: string): void {
  const key = tag ?? ALL_TAGS;
  const parked = parkedTags.get(backendName) ?? new Set();
  if (on) {
    parked.delete(key);
    if (tag === undefined) parked.clear();
  } else {
    parked.add(key);
  }
  parkedTags.set(backendName, parked);
  for (const state of ops.values()) {
    const fast = state.fast.get(backendName) ?? state.parked.get(backendName);
    if (!fast) continue;
    if (tag !== undefined && !fast.tags?.includes(tag)) continue;
    if (on) {
      state.parked.delete(backendName);
      state.fast.set(backendName, fast);
    } else {
      state.fast.delete(backendName);
      state.parked.set(backendName, fast);
    }
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
  // max |a − b| (or |a|), its temporaries freed: the helper itself leaks nothing
  const maxAbs = async (a: tf.Tensor, b?: tf.Tensor) => {
    const m = tf.tidy(() => tf.max(tf.abs(b ? tf.sub(a, b) : a)));
    const v = (await m.data())[0];
    m.dispose();
    return v;
  };
  const scale = Math.max(await maxAbs(ref[0]), 1e-6);
  const fwd = await maxAbs(ref[0], fast[0]);
  const gradMaxAbsDiff: Record<string, number> = {};
  let ok = fwd <= rtol * scale;
  for (let i = 0; i < present.length; i++) {
    const s = Math.max(await maxAbs(ref[i + 1]), 1e-6);
    const d = await maxAbs(ref[i + 1], fast[i + 1]);
    gradMaxAbsDiff[present[i]] = d / s;
    if (d > rtol * s) ok = false;
  }
  tf.dispose([...ref, ...fast, ...Object.values(inputs).filter(Boolean) as tf.Tensor[]]);
  return { op: op.definition.name, backend: tf.getBackend(), forwardMaxAbsDiff: fwd / scale, gradMaxAbsDiff, scale, ok };
}
