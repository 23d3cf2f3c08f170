// The conformance suite on a toy low-rank method over a toy model, built on the public contract: the sound
// method passes every check, and each deliberately broken copy fails the check that guards its defect.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import {
  BaseTunerLayer,
  Embedding,
  Linear,
  ParameterDict,
  PeftConfig,
  PEFT_METHOD_SPEC_VERSION,
  PreTrainedModel,
  basePeftConfigShape,
  prefixedParameterKey,
  registerPeftMethod,
  targetModulesSchema,
  toIdsTensor,
  z,
  type ForwardFn,
  type ForwardInputs,
  type ForwardOutput,
  type GenerateOptions,
  type InjectionMethod,
  type ModelConfig,
} from '@peftjs/core';
import { CONFORMANCE_CHECKS, ConformanceError, methodConformanceChecks, runMethodConformance, registerMethodConformance, type ConformanceCheckName, type ConformanceSpec } from '@peftjs/core/testing';

const VOCAB = 32;
const HIDDEN = 8;

/** Embedding → two residual tanh(Linear) blocks → head; fixed seeds, so every call builds the same weights. */
class ToyLM extends PreTrainedModel {
  readonly config: ModelConfig = {
    modelType: 'toy',
    vocabSize: VOCAB,
    hiddenSize: HIDDEN,
    numHiddenLayers: 2,
    numAttentionHeads: 1,
    numKeyValueHeads: 1,
    headDim: HIDDEN,
    tieWordEmbeddings: false,
    raw: {},
  };
  readonly outputHeadNames = ['lm_head'];
  readonly taskType = 'CAUSAL_LM';
  /** `embedsOff`: a broken model that reads inputsEmbeds at a different scale than its own embeddings. */
  constructor(private readonly embedsOff = false) {
    super();
    const w = (shape: number[], seed: number, std = 0.5) => tf.randomNormal(shape, 0, std, 'float32', seed);
    const ts = [w([VOCAB, HIDDEN], 1, 1), w([HIDDEN, HIDDEN], 2), w([HIDDEN], 3, 0.1), w([HIDDEN, HIDDEN], 4), w([HIDDEN], 5, 0.1), w([VOCAB, HIDDEN], 6)];
    this.registerModule('embed_tokens', new Embedding(VOCAB, HIDDEN, ts[0]));
    this.registerModule('proj_0', new Linear(HIDDEN, HIDDEN, { weight: ts[1], biasValue: ts[2] }));
    this.registerModule('proj_1', new Linear(HIDDEN, HIDDEN, { weight: ts[3], biasValue: ts[4] }));
    this.registerModule('lm_head', new Linear(HIDDEN, VOCAB, { weight: ts[5], bias: false }));
    tf.dispose(ts);
  }
  getInputEmbeddings(): Embedding {
    return this.child<Embedding>('embed_tokens');
  }
  forward(inputs: ForwardInputs): ForwardOutput {
    return tf.tidy(() => {
      let h = inputs.inputsEmbeds ? tf.mul(inputs.inputsEmbeds, this.embedsOff ? 1.01 : 1) : this.getInputEmbeddings().forward(toIdsTensor(inputs.inputIds!));
      for (const p of ['proj_0', 'proj_1']) h = tf.add(h, tf.tanh(this.child<Linear>(p).forward(h)));
      const logits = this.child<Linear>('lm_head').forward(h);
      if (!inputs.labels) return { logits };
      const labels = toIdsTensor(inputs.labels, 'labels');
      const [b, t] = labels.shape as [number, number];
      const tgt = labels.slice([0, 1], [b, t - 1]);
      const keep = tf.cast(tf.notEqual(tgt, -100), 'float32');
      const lp = tf.logSoftmax(logits.slice([0, 0, 0], [b, t - 1, VOCAB]));
      const picked = tf.sum(tf.mul(lp, tf.oneHot(tf.maximum(tgt, tf.scalar(0, 'int32')) as tf.Tensor2D, VOCAB)), -1);
      const loss = tf.div(tf.neg(tf.sum(tf.mul(picked, keep))), tf.maximum(tf.sum(keep), 1)) as tf.Scalar;
      return { logits, loss };
    });
  }
  /**
   * Greedy. A position's logits depend on its token alone here, so after the prompt each step feeds only the
   * last token (what a KV cache does for a transformer); `forward` is the PEFT wrapper's.
   */
  async generate(opts: GenerateOptions, forward: ForwardFn = (i) => this.forward(i)): Promise<number[][]> {
    const rows = (opts.inputIds as number[][]).map((r) => r.slice());
    for (let n = 0; n < (opts.maxNewTokens ?? 20); n++) {
      const { logits } = forward({ inputIds: n === 0 ? rows : rows.map((r) => r.slice(-1)) });
      const next = tf.tidy(() => tf.argMax(logits.slice([0, logits.shape[1]! - 1, 0], [-1, 1, -1]).reshape([rows.length, -1]), -1));
      const ids = await next.data();
      tf.dispose([logits, next]);
      rows.forEach((r, i) => r.push(ids[i]));
    }
    return rows;
  }
}

/** The defects a toy copy can carry; each is guarded by one check. */
type Defect =
  | 'identity' // B starts random: not the identity at init
  | 'unsaved' // a trainable scale the saved file does not hold
  | 'merge-twice' // merge adds ΔW twice
  | 'merge-nothing' // merge leaves W alone (the forward keeps adding the adapter)
  | 'unmerge-nothing' // unmerge leaves ΔW in W
  | 'no-disable' // the forward ignores disableAdapters
  | 'keep-deleted' // deleteAdapter forgets to remove B
  | 'leak-deleted' // deleteAdapter removes B without disposing it
  | 'base-trainable' // the wrapped weight is left trainable
  | 'frozen-adapter' // B is made frozen: the adapter cannot learn
  | 'train-mutates-base' // the training forward nudges the base weight
  | 'leak-forward' // each forward leaks a tensor
  | 'decode-skips-adapter' // one position at a time (a cached decoding step) runs the base alone
  | 'safe-merge-twice' // safe_merge (checked) adds ΔW twice, the unchecked merge is right
  | 'unused-parameter' // a trainable parameter of the method that the forward never reads
  | 'inject-mutates-base' // injection shifts the base bias in place (the forward shifts it back)
  | 'stash-in-model' // injection keeps a parameter on the model itself, outside its layer
  | 'refuse-merge'; // merging is refused though promised

let count = 0;

/** A low-rank additive adapter on Linear: y = base(x) + x·Aᵀ·Bᵀ (B zero at init), merged as W += B·A. */
function toyMethod(defect?: Defect) {
  const id = `TOY_CONFORMANCE_${count++}`;
  const prefix = `toy${count}_`;
  const A = `${prefix}A`;
  const B = `${prefix}B`;
  const shape = { ...basePeftConfigShape, targetModules: targetModulesSchema.default(['proj_0', 'proj_1']), r: z.number().int().positive().default(2) };
  type Fields = z.output<z.ZodObject<typeof shape>>;
  interface ToyConfig extends Fields {}
  class ToyConfig extends PeftConfig {
    static readonly peftType = id;
    static readonly shape = shape;
    static readonly hfOnlyDefaults = {};
    constructor(input: Partial<z.input<z.ZodObject<typeof shape>>> = {}) {
      super();
      this.init(input, 'ToyConfig');
    }
  }
  class ToyLinear extends BaseTunerLayer {
    readonly peftType = id;
    constructor(base: Linear) {
      super(base);
      this.registerModule(A, new ParameterDict());
      this.registerModule(B, new ParameterDict());
      if (defect === 'unsaved') this.registerModule('scale', new ParameterDict());
      if (defect === 'unused-parameter') this.registerModule(`${prefix}C`, new ParameterDict());
    }
    private dict(n: string): ParameterDict {
      return this.child<ParameterDict>(n);
    }
    private get linear(): Linear {
      return this.getBaseLayer() as Linear;
    }
    add(name: string, r: number): void {
      const { inFeatures, outFeatures } = this.linear;
      tf.tidy(() => {
        this.dict(A).set(name, tf.randomUniform([r, inFeatures], -0.5, 0.5, 'float32', 7 + this.adapterNames().length));
        this.dict(B).set(name, defect === 'identity' ? tf.randomNormal([outFeatures, r], 0, 0.3, 'float32', 9) : tf.zeros([outFeatures, r]));
        if (defect === 'unsaved') this.dict('scale').set(name, tf.ones([outFeatures]));
        if (defect === 'unused-parameter') this.dict(`${prefix}C`).set(name, tf.ones([outFeatures]));
      });
      if (defect === 'base-trainable') this.linear.weight.trainable = true;
      if (defect === 'inject-mutates-base' && this.adapterNames().length === 1) {
        const shifted = tf.tidy(() => tf.add(this.linear.bias!, 0.5));
        this.linear.bias!.assign(shifted);
        shifted.dispose();
      }
    }
    override setAdapter(names: string[], trainable = true): void {
      super.setAdapter(names, trainable);
      if (defect === 'frozen-adapter') for (const n of names) if (this.has(n)) this.dict(B).get(n)!.trainable = false;
      if (defect === 'base-trainable') this.linear.weight.trainable = true;
    }
    adapterNames(): string[] {
      return this.dict(A).keys();
    }
    private delta(name: string): tf.Tensor {
      return tf.matMul(this.dict(B).get(name)!, this.dict(A).get(name)!);
    }
    protected mergeOne(name: string): void {
      if (defect === 'merge-nothing') return;
      const w = this.linear.weight;
      const next = tf.tidy(() => tf.add(w, defect === 'merge-twice' ? tf.mul(this.delta(name), 2) : this.delta(name)));
      w.assign(next);
      next.dispose(); // assign shares the data; the tensor itself is still ours to dispose
    }
    protected unmergeOne(name: string): void {
      if (defect === 'unmerge-nothing' || defect === 'merge-nothing') return;
      const w = this.linear.weight;
      const next = tf.tidy(() => tf.sub(w, this.delta(name)));
      w.assign(next);
      next.dispose();
    }
    protected deleteOne(name: string): void {
      this.dict(A).delete(name);
      if (defect === 'leak-deleted') (this.dict(B) as unknown as { _params: Map<string, tf.Variable> })._params.delete(name);
      else if (defect !== 'keep-deleted') this.dict(B).delete(name);
      if (defect === 'unsaved') this.dict('scale').delete(name);
      if (defect === 'unused-parameter') this.dict(`${prefix}C`).delete(name);
    }
    protected override async mergeOneChecked(name: string): Promise<void> {
      this.mergeOne(name);
      if (defect === 'safe-merge-twice') this.mergeOne(name);
    }
    forward(x: tf.Tensor): tf.Tensor {
      if (defect === 'leak-forward') tf.keep(tf.zeros([1]));
      // 'merge-nothing' keeps adding the adapter after a merge (as if merged), 'no-disable' ignores the switch
      if (defect !== 'no-disable' && !(defect === 'merge-nothing' && !this.disableAdapters)) {
        const bypassed = this.bypass(x);
        if (bypassed) return bypassed;
      } else if (this.merged && defect === 'no-disable') return this.baseLayer.forward(x);
      if (defect === 'decode-skips-adapter' && x.rank === 3 && x.shape[1] === 1) return this.baseLayer.forward(x);
      if (defect === 'train-mutates-base' && this.training) {
        const nudged = tf.tidy(() => tf.add(this.linear.bias!, 1e-3));
        this.linear.bias!.assign(nudged);
        nudged.dispose();
      }
      return tf.tidy(() => {
        let y = this.baseLayer.forward(x);
        for (const n of this.activeAdapters) {
          if (!this.has(n)) continue;
          if (this.merged && defect !== 'merge-nothing') continue;
          let d = tf.matMul(tf.matMul(x.reshape([-1, x.shape[x.rank - 1]!]), this.dict(A).get(n)!, false, true), this.dict(B).get(n)!, false, true);
          if (defect === 'unsaved') d = tf.mul(d, this.dict('scale').get(n)!);
          y = tf.add(y, d.reshape(y.shape));
        }
        return defect === 'inject-mutates-base' ? tf.sub(y, 0.5) : y;
      });
    }
  }
  const method: InjectionMethod<ToyConfig, Linear | ToyLinear> = {
    specificationVersion: PEFT_METHOD_SPEC_VERSION,
    kind: 'injection',
    peftType: id,
    prefix,
    configClass: ToyConfig,
    targetFields: { targetModules: 'targetModules' },
    canWrap: (m): m is Linear | ToyLinear => m instanceof Linear || m instanceof ToyLinear,
    inject({ target, targetName, adapterName, config, model }) {
      if (defect === 'stash-in-model' && targetName === 'proj_0') {
        const stash = model.maybeChild<ParameterDict>(`${prefix}stash`) ?? model.registerModule(`${prefix}stash`, new ParameterDict());
        tf.tidy(() => stash.set(adapterName, tf.zeros([1])));
      }
      const layer = target instanceof ToyLinear ? target : new ToyLinear(target);
      layer.add(adapterName, config.r);
      return layer;
    },
    // the 'unsaved' copy claims only its A and B, so its scale would be lost (contract v2 refuses the save)
    parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, prefix),
    ...(defect === 'refuse-merge' ? { cannotMergeReason: 'toy refuses' } : {}),
  };
  registerPeftMethod(method);
  const spec: ConformanceSpec = {
    name: defect ? `toy with defect ${defect}` : 'toy',
    config: () => new ToyConfig(),
    model: () => new ToyLM(),
    promises: { identityAtInit: true, merge: true },
    ...(defect === 'unsaved' ? { isMethodParameter: (n: string) => n.includes(prefix) || n.includes('.scale.') } : {}),
  };
  return spec;
}

describe('the conformance suite on a sound toy method', () => {
  // every check, registered as a method package registers them
  registerMethodConformance(toyMethod(), { describe, it });

  it('a malformed spec is refused, naming the field', () => {
    const spec = toyMethod();
    expect(() => methodConformanceChecks({ ...spec, config: undefined as never })).toThrow(/spec "toy": field "config"/);
    expect(() => methodConformanceChecks({ ...spec, promises: { merge: true } as never })).toThrow(/field "promises.identityAtInit"/);
    expect(() => methodConformanceChecks({ ...spec, inputs: { inputIds: [[1, 2], [3]] } })).toThrow(/field "inputs.inputIds"/);
    expect(() => methodConformanceChecks({ ...spec, skip: { 'merge works': 'typo' } as never })).toThrow(/field "skip.merge works" must be one of the checks/);
  });

  it('lists every check once, in order; a spec may skip one with its reason', () => {
    const spec = toyMethod();
    expect(methodConformanceChecks(spec).map((c) => c.name)).toEqual([...CONFORMANCE_CHECKS]);
    const skipped = methodConformanceChecks({ ...spec, skip: { 'identity at init': 'not promised here' } });
    expect(skipped.find((c) => c.name === 'identity at init')!.skip).toBe('not promised here');
    // without the identity promise the check is not run at all
    expect(methodConformanceChecks({ ...spec, promises: { identityAtInit: false, merge: true } }).map((c) => c.name)).not.toContain('identity at init');
  });
});

/** Runs every check of a broken copy: the failures by check name (and their errors). */
async function failures(spec: ConformanceSpec): Promise<Map<ConformanceCheckName, ConformanceError>> {
  const out = new Map<ConformanceCheckName, ConformanceError>();
  for (const c of methodConformanceChecks(spec)) {
    try {
      await c.run();
    } catch (e) {
      expect(e, `${c.name} threw something other than a ConformanceError`).toBeInstanceOf(ConformanceError);
      out.set(c.name, e as ConformanceError);
    }
  }
  return out;
}

/** Defect → the checks that must fail (at least these), and text its message must carry. */
const CAUGHT: [Defect, ConformanceCheckName, RegExp][] = [
  ['identity', 'identity at init', /logits differ/],
  ['unsaved', 'save → load is exact', /scale|would not be written|not saved|was it saved/],
  ['merge-twice', 'merge ≈ adapted, unmerge restores the base', /merged vs adapted/],
  ['merge-twice', 'mergeAndUnload ≈ adapted, unload gives the base', /mergeAndUnload vs adapted/],
  ['merge-nothing', 'merge ≈ adapted, unmerge restores the base', /changed no base weight/],
  ['merge-nothing', 'mergeAndUnload ≈ adapted, unload gives the base', /mergeAndUnload vs adapted/],
  ['unmerge-nothing', 'merge ≈ adapted, unmerge restores the base', /unmergeAdapter left index/],
  ['no-disable', 'disableAdapter gives the base logits', /inside disableAdapter/],
  ['keep-deleted', 'deleteAdapter removes every parameter', /still in the model after deleteAdapter/],
  ['leak-deleted', 'deleteAdapter removes every parameter', /undisposed/],
  ['base-trainable', "only the method's parameters train", /is trainable but is not the method's/],
  ['frozen-adapter', "only the method's parameters train", /is the method's but is not trainable/],
  ['train-mutates-base', "only the method's parameters train", /though frozen/],
  ['leak-forward', 'disableAdapter gives the base logits', /tensors leaked/],
  ['refuse-merge', 'merge ≈ adapted, unmerge restores the base', /cannot be merged/],
  ['safe-merge-twice', 'merge ≈ adapted, unmerge restores the base', /safe-merged vs adapted/],
  ['unused-parameter', "only the method's parameters train", /got no gradient/],
  ['inject-mutates-base', 'mergeAndUnload ≈ adapted, unload gives the base', /unload: logits differ/],
  ['stash-in-model', 'mergeAndUnload ≈ adapted, unload gives the base', /left a parameter the base model did not have/],
  ['decode-skips-adapter', "generate follows the forward; disabled, it is the base model's", /forward's greedy choice/],
];

describe('each broken toy method fails the check that guards its defect', () => {
  for (const defect of [...new Set(CAUGHT.map(([d]) => d))]) {
    it(defect, async () => {
      const got = await failures(toyMethod(defect));
      for (const [d, check, text] of CAUGHT) {
        if (d !== defect) continue;
        const e = got.get(check);
        expect(e, `${defect}: "${check}" passed; failures: ${[...got.keys()].join(' | ')}`).toBeDefined();
        expect(e!.check).toBe(check);
        expect(e!.method).toContain(defect);
        expect(e!.message).toMatch(text);
      }
      expect(tf.memory().numTensors).toBeLessThan(10_000);
    });
  }

  it('runMethodConformance runs every check in order and stops at the first failure', async () => {
    await runMethodConformance(toyMethod());
    await expect(runMethodConformance(toyMethod('keep-deleted'))).rejects.toThrow(/deleteAdapter removes every parameter/);
  });

  it('a model that reads inputsEmbeds differently from its inputIds fails the inputsEmbeds check', async () => {
    const check = methodConformanceChecks({ ...toyMethod(), model: () => new ToyLM(true) }).find((c) => c.name === "inputsEmbeds give the inputIds' logits")!;
    await expect(check.run()).rejects.toThrow(/forward with inputsEmbeds: logits differ/);
  });

  it('a promise the method does not keep fails both ways: merge promised false but merging works', async () => {
    const got = await failures({ ...toyMethod(), promises: { identityAtInit: true, merge: false } });
    expect(got.get('merge ≈ adapted, unmerge restores the base')?.message).toMatch(/mergeAdapter succeeded/);
    expect(got.get('mergeAndUnload ≈ adapted, unload gives the base')?.message).toMatch(/mergeAndUnload succeeded/);
  });

  it('an exact-unmerge promise fails on an arithmetic merge whose unmerge rounds', async () => {
    const spec = { ...toyMethod(), promises: { identityAtInit: true, merge: true, exactUnmerge: true } };
    const check = methodConformanceChecks(spec).find((c) => c.name === 'merge ≈ adapted, unmerge restores the base')!;
    await expect(check.run()).rejects.toThrow(/bit for bit/);
  });

  it('errors name the tensor at fault', async () => {
    const got = await failures(toyMethod('keep-deleted'));
    const e = got.get('deleteAdapter removes every parameter')!;
    expect(e.tensor).toMatch(/^base_model\.model\.proj_\d\.toy\d+_B\.other$/);
    expect(e.message).toContain(`tensor "${e.tensor}"`);
  });
});
