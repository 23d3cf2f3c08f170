// The shared method conformance suite (HF PEFT's PeftCommonTester is the model): given a config, a model
// factory and what a method promises, named async checks that every PEFT method — built-in or third-party —
// must pass through the public API alone. A check throws a ConformanceError naming itself, the method and
// the tensor at fault. No test framework is imported: registerMethodConformance takes describe/it.
import * as tf from '@tensorflow/tfjs';
import { PeftModel, getPeftMethod, getPeftModel, memoryFileSystem, type ForwardInputs, type ForwardOutput, type Module, type PeftConfig, type PreTrainedModel } from '@peftjs/core';

/** The checks, in the order they run. */
export const CONFORMANCE_CHECKS = [
  'identity at init',
  'save → load is exact',
  'merge ≈ adapted, unmerge restores the base',
  'mergeAndUnload ≈ adapted, unload gives the base',
  'disableAdapter gives the base logits',
  'deleteAdapter removes every parameter',
  'inputsEmbeds give the inputIds\' logits',
  'generate follows the forward; disabled, it is the base model\'s',
  "only the method's parameters train",
] as const;
export type ConformanceCheckName = (typeof CONFORMANCE_CHECKS)[number];

/** A batch for the forwards and the training steps (number[][]; labels -100 where ignored). */
export interface ConformanceInputs {
  inputIds: number[][];
  attentionMask?: number[][];
  labels?: number[][];
}

/** What a method promises; each promise is checked both ways (a refused merge must be refused). */
export interface MethodPromises {
  /** At init the adapted model's logits are the base model's, bit for bit (LoRA's zero B, IA3's ones, LN copies). */
  identityAtInit: boolean;
  /** mergeAdapter / unmergeAdapter / mergeAndUnload work; false: they are refused with an error and change nothing. */
  merge: boolean;
  /**
   * unmerge gives every base weight back bit for bit (methods that swap a copy in: LN tuning, BitFit). Otherwise
   * W' = (W + Δ) − Δ in float32 is allowed the rounding of the two operations: see DEFAULT_TOLERANCES.unmergeUlps.
   */
  exactUnmerge?: boolean;
}

/**
 * The training step's optimizer over named parameters; the default is tf.train.adam(1e-2). A method package
 * may pass the Trainer's AdamW: `(params) => { const o = new AdamW([...params], { weightDecay: 0 }); return { step: (g) => o.step(g, 1e-2), dispose: () => o.dispose() }; }`.
 */
export type ConformanceOptimizer = (params: Map<string, tf.Variable>) => { step(grads: Record<string, tf.Tensor>): void; dispose(): void };

export interface ConformanceTolerances {
  /**
   * merged vs adapted logits: max |Δ| ≤ merge · max |adapted| (default 1e-4, the project's parity criterion).
   * Merging reassociates float32 sums ((x·W + x·ΔW) vs x·(W + ΔW)) through every layer; nothing is exact.
   */
  merge: number;
  /**
   * unmerge: every element of a base weight within unmergeUlps · 2⁻²⁴ · (max |W| + max |W merged|) of its value
   * before the merge, the maxima over the tensor (default 8: the merge and the unmerge each round once per
   * elementwise operation, DoRA's take four, at the magnitude of the largest values they pass through).
   */
  unmergeUlps: number;
}
export const DEFAULT_TOLERANCES: ConformanceTolerances = { merge: 1e-4, unmergeUlps: 8 };

export interface ConformanceSpec {
  /** The method as the test names it, e.g. `LoRA` or `DoRA (q_proj, v_proj)`. */
  name: string;
  /** A fresh config (called for each adapter the checks add). */
  config: () => PeftConfig;
  /** A fresh base model (each check wraps its own; the checks dispose them). */
  model: () => PreTrainedModel | Promise<PreTrainedModel>;
  promises: MethodPromises;
  /** Default: two rows of six tokens (the second left-padded), labels the inputs. */
  inputs?: ConformanceInputs;
  /**
   * Which PeftModel parameter names belong to the method. Default: a path segment starts with the method's
   * registered prefix, or the parameter is under `prompt_encoder.` or a `modules_to_save` copy.
   */
  isMethodParameter?: (name: string) => boolean;
  optimizer?: ConformanceOptimizer;
  /**
   * The absolute part of the noise the checks add to an adapter to move it off its init (σ = 0.1 · rms + this;
   * default 0.1). Raise it for an adapter whose effect on the logits is too small to tell merged from base.
   */
  perturbation?: number;
  /** Optimizer steps of the training check (default 2: LoRA's A gets a gradient once B left zero). */
  trainingSteps?: number;
  /** Method parameters that may legitimately stay unchanged by the training steps (default none). */
  untrained?: (name: string) => boolean;
  tolerances?: Partial<ConformanceTolerances>;
  /**
   * Frees tensors a method keeps outside the model's modules, which `dispose()` cannot reach (a built-in method
   * frees its own through its layers' `disposeBuffers`), called before each PeftModel the checks made is disposed.
   */
  release?: (peft: PeftModel) => void;
  /** Checks not run, each with the reason (the registrar marks them skipped when it can). */
  skip?: Partial<Record<ConformanceCheckName, string>>;
}

/** A failed check: names the check, the method and (when one is at fault) the tensor. */
export class ConformanceError extends Error {
  readonly check: ConformanceCheckName;
  readonly method: string;
  readonly tensor: string | undefined;
  constructor(check: ConformanceCheckName, method: string, message: string, opts: { tensor?: string; cause?: unknown } = {}) {
    super(`${method} · ${check}: ${opts.tensor ? `tensor "${opts.tensor}": ` : ''}${message}`, { cause: opts.cause });
    this.name = 'ConformanceError';
    this.check = check;
    this.method = method;
    this.tensor = opts.tensor;
  }
}

export interface ConformanceCheck {
  name: ConformanceCheckName;
  /** Set when the spec skips the check. */
  skip?: string;
  run(): Promise<void>;
}

type Fail = (message: string, tensor?: string) => never;
type Data = Float32Array | Int32Array | Uint8Array;

const DEFAULT_INPUTS: ConformanceInputs = {
  inputIds: [
    [5, 9, 14, 3, 27, 8],
    [0, 0, 11, 6, 19, 2],
  ],
  attentionMask: [
    [1, 1, 1, 1, 1, 1],
    [0, 0, 1, 1, 1, 1],
  ],
  labels: [
    [5, 9, 14, 3, 27, 8],
    [-100, -100, 11, 6, 19, 2],
  ],
};

async function read(t: tf.Tensor): Promise<Data> {
  return (await t.data()) as Data;
}

/** The first index where a and b differ (NaN equals NaN), or -1. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i;
  return -1;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

interface Logits {
  shape: number[];
  data: Data;
}

/** Eval-mode logits of `forward`, read asynchronously; the tensors are disposed. */
async function logitsOf(forward: () => { logits: tf.Tensor; loss?: tf.Scalar }): Promise<Logits> {
  const out = forward();
  try {
    return { shape: out.logits.shape, data: await read(out.logits) };
  } finally {
    tf.dispose([out.logits, out.loss ?? []]);
  }
}

/** Copies of every parameter's values, by name. */
async function snapshot(named: Iterable<[string, tf.Variable]>): Promise<Map<string, Data>> {
  const out = new Map<string, Data>();
  for (const [k, v] of named) out.set(k, (await read(v)).slice() as Data);
  return out;
}

/** A fresh base model, its logits on the batch and its parameter names, before any adapter. */
interface BaseRun {
  model: PreTrainedModel;
  logits: Logits;
  names: string[];
}

/** Names of the trainable parameters below `m`. */
function trainableNames(m: Module): string[] {
  return [...m.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
}

/** A runner over one spec: shared helpers of the checks. */
class Runner {
  readonly inputs: ConformanceInputs;
  readonly tol: ConformanceTolerances;
  private warm: Promise<void> | undefined;
  constructor(readonly spec: ConformanceSpec) {
    this.inputs = spec.inputs ?? DEFAULT_INPUTS;
    this.tol = { ...DEFAULT_TOLERANCES, ...spec.tolerances };
  }

  get peftType(): string {
    return this.spec.config().peftType;
  }

  isMethodParameter(name: string): boolean {
    if (this.spec.isMethodParameter) return this.spec.isMethodParameter(name);
    const prefix = getPeftMethod(this.peftType).prefix;
    if (name.startsWith('prompt_encoder.') || name.includes('.modules_to_save.')) return true;
    return name.split('.').some((p) => p.startsWith(prefix));
  }

  forwardInputs(withLabels = false) {
    const { inputIds, attentionMask, labels } = this.inputs;
    return withLabels ? { inputIds, attentionMask, labels: labels ?? inputIds } : { inputIds, attentionMask };
  }

  async baseModel(): Promise<BaseRun> {
    const model = await this.spec.model();
    model.eval();
    const logits = await logitsOf(() => model.forward(this.forwardInputs()));
    return { model, logits, names: [...model.namedParameters()].map(([k]) => k) };
  }

  /**
   * Adds seeded Gaussian noise to every trainable float parameter (the active adapter's), so that the
   * adapter differs from its identity init and each of its tensors matters: HF's tests use init_weights=False.
   * σ = 0.1 · rms(p) + spec.perturbation (default 0.1).
   */
  perturb(peft: PeftModel, seed: number, floor = this.spec.perturbation ?? 0.1): void {
    let i = 0;
    for (const [, p] of peft.namedParameters()) {
      if (!p.trainable || p.dtype !== 'float32') continue;
      const s = seed * 1000 + i++;
      tf.tidy(() => {
        const rms = tf.sqrt(tf.mean(tf.square(p)));
        const sigma = tf.add(tf.mul(rms, 0.1), floor);
        p.assign(tf.add(p, tf.mul(tf.randomNormal(p.shape, 0, 1, 'float32', s), sigma)));
      });
    }
  }

  dispose(peft: PeftModel): void {
    this.spec.release?.(peft);
    peft.dispose();
  }

  /** Logits of `m`'s forward on the batch (a PeftModel or a plain model). */
  logits(m: { forward(inputs: ForwardInputs): ForwardOutput }, inputs: ForwardInputs = this.forwardInputs()): Promise<Logits> {
    return logitsOf(() => m.forward(inputs));
  }

  /**
   * A fresh base model (its logits and parameter names read first) with a new adapter, perturbed with `seed`
   * unless null; `fn` gets them and the adapted logits. Afterwards the PeftModel is disposed, with the model
   * inside it (also when `fn` unloaded it).
   */
  async withPeft(seed: number | null, fn: (c: { base: BaseRun; peft: PeftModel; adapted: Logits }) => Promise<void>): Promise<void> {
    const base = await this.baseModel();
    const peft = getPeftModel(base.model, this.spec.config());
    try {
      if (seed !== null) this.perturb(peft, seed);
      await fn({ base, peft, adapted: await this.logits(peft) });
    } finally {
      this.dispose(peft);
    }
  }

  /** One-time caches (kernels, RoPE tables) filled before any check counts tensors. */
  warmUp(): Promise<void> {
    this.warm ??= (async () => {
      const { model } = await this.baseModel();
      const peft = getPeftModel(model, this.spec.config());
      try {
        await logitsOf(() => peft.forward(this.forwardInputs()));
        peft.train();
        const { value, grads } = tf.variableGrads(() => peft.forward(this.forwardInputs(true)).loss!, peft.trainableParameters());
        tf.dispose([value, ...Object.values(grads)]);
        peft.eval();
        await logitsOf(() => peft.disableAdapter(() => peft.forward(this.forwardInputs())));
      } finally {
        this.dispose(peft);
      }
    })();
    return this.warm;
  }

  expectSameLogits(fail: Fail, got: Logits, want: Logits, what: string): void {
    if (got.shape.join() !== want.shape.join()) fail(`${what}: logits of shape [${got.shape}], expected [${want.shape}]`, 'logits');
    const i = firstDifference(got.data, want.data);
    if (i >= 0) fail(`${what}: logits differ at index ${i} (${got.data[i]} vs ${want.data[i]}; max |Δ| ${maxAbsDiff(got.data, want.data)}); they must be bit-identical`, 'logits');
  }

  expectCloseLogits(fail: Fail, got: Logits, want: Logits, rel: number, what: string): void {
    if (got.shape.join() !== want.shape.join()) fail(`${what}: logits of shape [${got.shape}], expected [${want.shape}]`, 'logits');
    const d = maxAbsDiff(got.data, want.data);
    const scale = maxAbs(want.data);
    if (!(d <= rel * scale)) fail(`${what}: max |Δ| ${d} is more than ${rel} × max |logits| ${scale}`, 'logits');
  }

  /** The adapter must move the logits well beyond the tolerance, or a merge check could not fail. */
  expectAdapterMatters(fail: Fail, adapted: Logits, base: Logits): void {
    if (adapted.shape.join() !== base.shape.join()) return;
    const d = maxAbsDiff(adapted.data, base.data);
    const scale = maxAbs(base.data);
    if (!(d > 10 * this.tol.merge * scale)) {
      fail(`the perturbed adapter moves the logits by only ${d} (max |logits| ${scale}): too little to tell merged from base; give a config whose adapter reaches the logits`, 'logits');
    }
  }
}

function makeCheck(runner: Runner, name: ConformanceCheckName, body: (fail: Fail) => Promise<void>): ConformanceCheck {
  const { spec } = runner;
  return {
    name,
    skip: spec.skip?.[name],
    async run() {
      const method = `${spec.name} (${runner.peftType})`;
      const fail: Fail = (message, tensor) => {
        throw new ConformanceError(name, method, message, { tensor });
      };
      try {
        await runner.warmUp();
        const before = tf.memory().numTensors;
        await body(fail);
        const after = tf.memory().numTensors;
        if (after !== before) fail(`tf.memory().numTensors went from ${before} to ${after} over the check (every model and output was disposed): ${after - before} tensors leaked`);
      } catch (e) {
        if (e instanceof ConformanceError) throw e;
        throw new ConformanceError(name, method, `threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e });
      }
    },
  };
}

const DIR = '/conformance/adapter';

/** A spec's fields, checked before any check is made (an error names the field). */
function checkSpec(spec: ConformanceSpec): void {
  const bad = (field: string, want: string) => {
    throw new TypeError(`method conformance spec${typeof spec?.name === 'string' ? ` "${spec.name}"` : ''}: field "${field}" must be ${want}`);
  };
  if (!spec || typeof spec !== 'object') bad('(the spec)', 'an object');
  if (typeof spec.name !== 'string' || !spec.name) bad('name', 'a non-empty string');
  if (typeof spec.config !== 'function') bad('config', 'a function returning a fresh PeftConfig');
  if (typeof spec.model !== 'function') bad('model', 'a function returning a fresh base model (or a Promise of one)');
  if (!spec.promises || typeof spec.promises.identityAtInit !== 'boolean') bad('promises.identityAtInit', 'true or false');
  if (typeof spec.promises.merge !== 'boolean') bad('promises.merge', 'true or false');
  const rows = spec.inputs?.inputIds;
  if (spec.inputs && (!Array.isArray(rows) || !rows.length || !rows.every((row) => Array.isArray(row) && row.length === rows[0].length && row.length > 0))) {
    bad('inputs.inputIds', 'a non-empty number[][] with rows of one length');
  }
  for (const k of Object.keys(spec.skip ?? {})) if (!(CONFORMANCE_CHECKS as readonly string[]).includes(k)) bad(`skip.${k}`, `one of the checks: ${CONFORMANCE_CHECKS.join('; ')}`);
}

/** A merge the method cannot do must throw (and the caller checks it changed nothing). */
async function expectRefused(fail: Fail, what: string, merge: () => unknown): Promise<void> {
  try {
    await merge();
  } catch {
    return;
  }
  fail(`${what} succeeded, but the spec says this method cannot merge (promises.merge false)`);
}

/** The named checks of a spec, to run one by one (or register with registerMethodConformance). */
export function methodConformanceChecks(spec: ConformanceSpec): ConformanceCheck[] {
  checkSpec(spec);
  const r = new Runner(spec);
  const checks: ConformanceCheck[] = [];
  const check = (name: ConformanceCheckName, body: (fail: Fail) => Promise<void>) => checks.push(makeCheck(r, name, body));

  if (spec.promises.identityAtInit) {
    check('identity at init', (fail) =>
      r.withPeft(null, async ({ base, adapted }) => r.expectSameLogits(fail, adapted, base.logits, 'the adapter at init')),
    );
  }

  check('save → load is exact', (fail) =>
    r.withPeft(1, async ({ peft, adapted }) => {
      const fs = memoryFileSystem();
      const loaded: PeftModel[] = [];
      try {
        peft.addAdapter('second', spec.config());
        peft.setAdapter('second');
        r.perturb(peft, 2);
        const second = await r.logits(peft);
        peft.setAdapter('default');
        await peft.savePretrained(DIR, { fs });
        if (!(await fs.exists(`${DIR}/adapter_config.json`)) || !(await fs.exists(`${DIR}/adapter_model.safetensors`))) {
          fail(`savePretrained wrote ${[...fs.snapshot().keys()].join(', ') || 'nothing'}; expected adapter_config.json and adapter_model.safetensors in ${DIR}`);
        }
        if (!(await fs.exists(`${DIR}/second/adapter_model.safetensors`))) fail(`the adapter "second" was not saved in ${DIR}/second/ (HF's layout)`);
        // trainable reload: every parameter by name, bit for bit, and the logits
        const again = await PeftModel.fromPretrained(await spec.model(), DIR, { fs, isTrainable: true });
        loaded.push(again);
        again.eval();
        await again.loadAdapter(DIR, 'second', { fs, subfolder: 'second', isTrainable: true });
        const want = new Map(peft.namedParameters());
        const got = new Map(again.namedParameters());
        for (const k of want.keys()) if (!got.has(k)) fail('missing after save → load (the reloaded model has no parameter of this name)', k);
        for (const k of got.keys()) if (!want.has(k)) fail('appears after save → load, the saved model had no parameter of this name', k);
        for (const [k, v] of want) {
          const [a, b] = [await read(got.get(k)!), await read(v)];
          const i = firstDifference(a, b);
          if (i >= 0) fail(`differs after save → load at index ${i}: ${a[i]} vs ${b[i]}${r.isMethodParameter(k) ? ' (was it saved?)' : ''}`, k);
        }
        r.expectSameLogits(fail, await r.logits(again), adapted, 'reloaded (isTrainable)');
        again.setAdapter('second');
        r.expectSameLogits(fail, await r.logits(again), second, 'adapter "second" reloaded from its subfolder');
        const cfg = (c: PeftConfig) => JSON.stringify({ ...c.toJSON(), inference_mode: null });
        if (cfg(again.peftConfig.default) !== cfg(peft.peftConfig.default)) {
          fail(`the config changed in save → load: ${cfg(peft.peftConfig.default)} became ${cfg(again.peftConfig.default)}`, 'adapter_config.json');
        }
        // inference reload
        const frozen = await PeftModel.fromPretrained(await spec.model(), DIR, { fs });
        loaded.push(frozen);
        r.expectSameLogits(fail, await r.logits(frozen), adapted, 'reloaded for inference');
        const trainable = trainableNames(frozen);
        if (trainable.length) fail('is trainable after a load for inference (isTrainable false)', trainable[0]);
      } finally {
        for (const m of loaded) r.dispose(m);
      }
    }),
  );

  if (spec.promises.merge) {
    check('merge ≈ adapted, unmerge restores the base', (fail) =>
      r.withPeft(3, async ({ base, peft, adapted }) => {
        r.expectAdapterMatters(fail, adapted, base.logits);
        const before = await snapshot([...peft.namedParameters()].filter(([k]) => !r.isMethodParameter(k)));
        peft.mergeAdapter();
        r.expectCloseLogits(fail, await r.logits(peft), adapted, r.tol.merge, 'merged vs adapted');
        const merged = await snapshot(peft.namedParameters());
        // a merge may materialise a base weight (a 4-bit layer's fp32 weight): a new base parameter counts as changed
        const appeared = [...merged.keys()].some((k) => !before.has(k) && !r.isMethodParameter(k));
        if (!appeared && ![...before].some(([k, v]) => merged.get(k) && firstDifference(merged.get(k)!, v) >= 0)) {
          fail('mergeAdapter changed no base weight: the adapter is still applied beside the weights, not merged into them');
        }
        peft.unmergeAdapter();
        const now = new Map(peft.namedParameters());
        for (const [k, v] of before) {
          const p = now.get(k);
          if (!p) return fail('is gone after unmergeAdapter', k);
          const a = await read(p);
          if (spec.promises.exactUnmerge) {
            const i = firstDifference(a, v);
            if (i >= 0) fail(`unmergeAdapter did not restore it bit for bit: index ${i} is ${a[i]}, was ${v[i]}`, k);
            continue;
          }
          // rounding is relative to the largest values the merge and unmerge pass through: the tensor's, not the element's
          const m = merged.get(k) ?? v;
          const bound = r.tol.unmergeUlps * 2 ** -24 * (maxAbs(v) + maxAbs(m));
          for (let i = 0; i < a.length; i++) {
            if (!(Math.abs(a[i] - v[i]) <= bound)) fail(`unmergeAdapter left index ${i} at ${a[i]}, was ${v[i]} (merged ${m[i]}; allowed ±${bound})`, k);
          }
        }
        const unmerged = await logitsOf(() => peft.disableAdapter(() => peft.forward(r.forwardInputs())));
        if (spec.promises.exactUnmerge) r.expectSameLogits(fail, unmerged, base.logits, 'after unmerge, adapters off');
        else r.expectCloseLogits(fail, unmerged, base.logits, r.tol.merge, 'after unmerge, adapters off');
        r.expectCloseLogits(fail, await r.logits(peft), adapted, r.tol.merge, 'unmerged adapter, on again');
        // HF's safe_merge: the same merge, checked for NaN/Inf first
        await peft.mergeAdapter(undefined, { safeMerge: true });
        r.expectCloseLogits(fail, await r.logits(peft), adapted, r.tol.merge, 'safe-merged vs adapted');
        peft.unmergeAdapter();
      }),
    );
  } else {
    check('merge ≈ adapted, unmerge restores the base', (fail) =>
      r.withPeft(3, async ({ peft, adapted }) => {
        const snap = await snapshot(peft.namedParameters());
        await expectRefused(fail, 'mergeAdapter', () => peft.mergeAdapter());
        for (const [k, p] of peft.namedParameters()) {
          const i = firstDifference(await read(p), snap.get(k)!);
          if (i >= 0) fail(`changed by a refused mergeAdapter (index ${i})`, k);
        }
        r.expectSameLogits(fail, await r.logits(peft), adapted, 'after a refused merge');
      }),
    );
  }

  check('mergeAndUnload ≈ adapted, unload gives the base', async (fail) => {
    // after a merge a base weight may be new (a 4-bit layer's fp32 weight), but nothing of a PEFT layer may stay
    const remnant = (k: string) => r.isMethodParameter(k) || k.split('.').some((p) => p === 'base_layer' || p === 'original_module' || p === 'modules_to_save');
    const expectBaseNames = (m: PreTrainedModel, names: string[], what: string, merged = false) => {
      const now = [...m.namedParameters()].map(([k]) => k);
      const extra = now.filter((k) => !names.includes(k) && (!merged || remnant(k)));
      if (extra.length) fail(`${what} left a parameter the base model did not have`, extra[0]);
      const lost = names.filter((k) => !now.includes(k));
      if (lost.length) fail(`${what} lost a parameter of the base model`, lost[0]);
    };
    // unload first: it must give the base model back whatever the merge would do
    await r.withPeft(4, async ({ base, peft }) => {
      const model = peft.unload();
      expectBaseNames(model, base.names, 'unload');
      r.expectSameLogits(fail, await r.logits(model), base.logits, 'unload');
      const trainable = trainableNames(model);
      if (trainable.length) fail('is trainable in the model unload returned (the base stays frozen, as in HF)', trainable[0]);
    });
    await r.withPeft(4, async ({ base, peft, adapted }) => {
      if (spec.promises.merge) {
        const model = peft.mergeAndUnload();
        expectBaseNames(model, base.names, 'mergeAndUnload', true);
        r.expectCloseLogits(fail, await r.logits(model), adapted, r.tol.merge, 'mergeAndUnload vs adapted');
        return;
      }
      await expectRefused(fail, 'mergeAndUnload', () => peft.mergeAndUnload());
      r.expectSameLogits(fail, await r.logits(peft), adapted, 'after a refused mergeAndUnload');
    });
  });

  check('disableAdapter gives the base logits', (fail) =>
    r.withPeft(5, async ({ base, peft, adapted }) => {
      if (adapted.shape.join() === base.logits.shape.join() && firstDifference(adapted.data, base.logits.data) < 0) {
        fail('the perturbed adapter leaves the logits exactly the base model\'s: nothing to switch off', 'logits');
      }
      r.expectSameLogits(fail, await logitsOf(() => peft.disableAdapter(() => peft.forward(r.forwardInputs()))), base.logits, 'inside disableAdapter');
      r.expectSameLogits(fail, await r.logits(peft), adapted, 'after disableAdapter');
      const inner = await peft.disableAdapter(async () => r.logits(peft));
      r.expectSameLogits(fail, inner, base.logits, 'inside an async disableAdapter');
      r.expectSameLogits(fail, await r.logits(peft), adapted, 'after an async disableAdapter');
      // HF's disable_adapter_layers / enable_adapter_layers: a lasting switch that also freezes the adapter
      peft.disableAdapterLayers();
      r.expectSameLogits(fail, await r.logits(peft), base.logits, 'after disableAdapterLayers');
      const trainable = trainableNames(peft);
      if (trainable.length) fail('is still trainable after disableAdapterLayers', trainable[0]);
      peft.enableAdapterLayers();
      r.expectSameLogits(fail, await r.logits(peft), adapted, 'after enableAdapterLayers');
    }),
  );

  check('deleteAdapter removes every parameter', (fail) =>
    r.withPeft(6, async ({ peft, adapted }) => {
      const namesNow = () => [...peft.namedParameters()].map(([k]) => k);
      const names = namesNow();
      const tensors = tf.memory().numTensors;
      peft.addAdapter('other', spec.config());
      peft.setAdapter('other');
      r.perturb(peft, 7);
      const added = namesNow().filter((k) => !names.includes(k));
      if (!added.length) fail('addAdapter("other") added no parameter');
      const stray = added.find((k) => !k.split('.').includes('other'));
      if (stray) fail('was added for adapter "other" without the adapter name in its path (HF: lora_A.other.weight)', stray);
      await r.logits(peft);
      peft.deleteAdapter('other');
      if (Object.hasOwn(peft.peftConfig, 'other')) fail('deleteAdapter("other") left its config in peftConfig');
      if (peft.activeAdapters.join() !== 'default') fail(`after deleting the active adapter the active adapters are [${peft.activeAdapters}], expected [default]`);
      const after = namesNow();
      const left = after.filter((k) => !names.includes(k));
      if (left.length) fail('is still in the model after deleteAdapter("other")', left[0]);
      const lost = names.filter((k) => !after.includes(k));
      if (lost.length) fail('of the remaining adapter or the base was removed by deleteAdapter("other")', lost[0]);
      const now = tf.memory().numTensors;
      if (now !== tensors) fail(`deleteAdapter("other") left ${now - tensors} of its tensors undisposed (tf.memory().numTensors ${tensors} before addAdapter, ${now} after delete)`);
      r.expectSameLogits(fail, await r.logits(peft), adapted, 'the remaining adapter after the delete');
      const frozen = [...peft.namedParameters()].find(([k, p]) => r.isMethodParameter(k) && !p.trainable);
      if (frozen) fail('of the remaining active adapter is frozen after the delete', frozen[0]);
    }),
  );

  // HF's _test_passing_input_embeds_works: the embeddings of the ids, given instead of them, are the same input
  check("inputsEmbeds give the inputIds' logits", (fail) =>
    r.withPeft(9, async ({ peft, adapted }) => {
      const ids = tf.tensor2d(r.inputs.inputIds, undefined, 'int32');
      const embeds = tf.tidy(() => peft.model.getInputEmbeddings().forward(ids));
      try {
        const { attentionMask } = r.forwardInputs();
        r.expectSameLogits(fail, await r.logits(peft, { inputsEmbeds: embeds, attentionMask }), adapted, 'forward with inputsEmbeds');
      } finally {
        tf.dispose([ids, embeds]);
      }
    }),
  );

  check("generate follows the forward; disabled, it is the base model's", async (fail) => {
    const newTokens = 4;
    const row = r.inputs.inputIds[0];
    const mask = r.inputs.attentionMask?.[0] ?? row.map(() => 1);
    // no end-of-sequence token: every row gets all its new tokens
    const opts = { inputIds: [row], attentionMask: [mask], maxNewTokens: newTokens, eosTokenId: [] as number[] };
    const fresh = await r.baseModel();
    const baseGen = await fresh.model.generate(opts);
    fresh.model.dispose();
    await r.withPeft(null, async ({ peft }) => {
      // a strong adapter, so that its greedy tokens differ from the base model's and a decoding step that
      // skipped it would be seen: noise of σ 1, then 3, then 10 more until they do
      let gen: number[][] = baseGen;
      for (const [i, floor] of [1, 3, 10].entries()) {
        r.perturb(peft, 8 + i, Math.max(floor, spec.perturbation ?? 0));
        gen = await peft.generate(opts);
        if (gen.join('|') !== baseGen.join('|')) break;
      }
      if (gen.join('|') === baseGen.join('|')) fail(`the perturbed adapter generates the base model's tokens [${baseGen[0]}]: nothing tells a decoding step that skips it; raise spec.perturbation`);
      if (gen.length !== 1 || gen[0].length !== row.length + newTokens) fail(`generate returned ${gen.length} rows of ${gen[0]?.length} tokens, expected 1 of ${row.length + newTokens}`);
      // each new token is the greedy choice of a full forward over the sequence so far (no cache): a method
      // whose cached path (past keys/values, virtual tokens) differs from its forward fails here
      for (let t = 0; t < newTokens; t++) {
        const out = await r.logits(peft, { inputIds: [gen[0].slice(0, row.length + t)], attentionMask: [[...mask, ...new Array<number>(t).fill(1)]] });
        const v = out.shape[out.shape.length - 1];
        const last = out.data.subarray(out.data.length - v);
        let best = 0;
        for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
        const tok = gen[0][row.length + t];
        if (tok !== best && !(last[best] - last[tok] <= r.tol.merge * maxAbs(last))) {
          fail(`new token ${t} is ${tok}, but the forward's greedy choice is ${best} (logit ${last[best]} vs ${last[tok]})`, 'logits');
        }
      }
      const off = await peft.disableAdapter(() => peft.generate(opts));
      if (off.join('|') !== baseGen.join('|')) fail(`generate inside disableAdapter gave [${off[0]}], the base model gives [${baseGen[0]}]`);
    });
  });

  check("only the method's parameters train", (fail) =>
    r.withPeft(null, async ({ peft }) => {
      const named = new Map(peft.namedParameters());
      const trainable = new Map([...named].filter(([, p]) => p.trainable));
      if (!trainable.size) fail('getPeftModel left no parameter trainable');
      for (const [k, p] of named) {
        if (p.trainable && !r.isMethodParameter(k)) fail('is trainable but is not the method\'s (the base must be frozen)', k);
        if (!p.trainable && r.isMethodParameter(k)) fail('is the method\'s but is not trainable', k);
      }
      const before = await snapshot(named);
      const opt = (spec.optimizer ?? adam(1e-2))(trainable);
      try {
        peft.train();
        const steps = spec.trainingSteps ?? 2;
        const varNames = new Map([...trainable].map(([k, v]) => [v.name, k]));
        for (let step = 0; step < steps; step++) {
          const { value, grads } = tf.variableGrads(() => peft.forward(r.forwardInputs(true)).loss!, [...trainable.values()]);
          const byName: Record<string, tf.Tensor> = {};
          for (const [v, g] of Object.entries(grads)) byName[varNames.get(v)!] = g;
          try {
            const missing = [...trainable.keys()].find((k) => !byName[k]);
            if (missing) fail('got no gradient from the loss', missing);
            const loss = (await value.data())[0];
            if (!Number.isFinite(loss)) fail(`the loss is ${loss} at step ${step}`, 'loss');
            opt.step(byName);
            await peft.afterOptimizerStep(step, byName);
          } finally {
            tf.dispose([value, ...Object.values(grads)]);
          }
        }
        peft.eval();
        let changed = 0;
        for (const [k, p] of peft.namedParameters()) {
          const was = before.get(k);
          if (!was) return fail('appeared during training', k);
          const same = firstDifference(await read(p), was) < 0;
          if (!trainable.has(k)) {
            if (!same) fail(`changed in ${steps} optimizer steps though frozen (the base must stay bit-identical)`, k);
          } else if (same) {
            if (!spec.untrained?.(k)) fail(`was not changed by ${steps} optimizer steps (no gradient reaches it?)`, k);
          } else changed++;
        }
        if (!changed) fail(`no parameter changed in ${steps} optimizer steps`);
      } finally {
        opt.dispose();
      }
    }),
  );

  return checks;
}

/** tf.train.adam as a ConformanceOptimizer. */
export function adam(lr: number): ConformanceOptimizer {
  return (params) => {
    const opt = tf.train.adam(lr);
    const byVar = new Map([...params].map(([k, v]) => [k, v.name]));
    return {
      step(grads) {
        opt.applyGradients(Object.entries(grads).map(([k, tensor]) => ({ name: byVar.get(k)!, tensor })));
      },
      dispose: () => opt.dispose(),
    };
  };
}

/** Runs every check of a spec in order; the first failure throws. */
export async function runMethodConformance(spec: ConformanceSpec): Promise<void> {
  for (const c of methodConformanceChecks(spec)) if (!c.skip) await c.run();
}

/** What registerMethodConformance needs of a test framework (vitest's, jest's and mocha's describe/it fit). */
export interface TestRegistrar {
  describe(name: string, fn: () => void): void;
  it: ((name: string, fn: () => Promise<void>, timeout?: number) => void) & { skip?: (name: string, fn: () => Promise<void>) => void };
}

/** Registers one test per check under `describe('<name> conformance')`. */
export function registerMethodConformance(spec: ConformanceSpec, t: TestRegistrar, opts: { timeout?: number } = {}): void {
  t.describe(`${spec.name} conformance`, () => {
    for (const c of methodConformanceChecks(spec)) {
      if (c.skip) t.it.skip?.(`${c.name} (skipped: ${c.skip})`, c.run);
      else t.it(c.name, c.run, opts.timeout);
    }
  });
}
