// The Trainer on the WebGPU backend (Dawn through the `webgpu` package; Mesa lavapipe in CI): HF's
// training trajectory, then generate / evaluate / save on the trained model, and non-finite steps
// skipped on the device exactly as on the cpu backend. Without a WebGPU adapter the suite is skipped.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftError, PeftModel, getPeftModel, initBackend, manualSeed, parseSafetensors, rawToArray } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { evaluatePeftModel } from '@peftjs/evaluator';
import { AdamW, SGD, Trainer, type Example, type LogEntry, type NamedParams, type Optimizer } from './index';
import { randomExamples, tinyLlama } from './__fixtures__/tiny';
import { hfCase, trajectoryCase } from '../../../tools/testing/fixtures';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const why = available ? '' : (report as Error).message;

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-trainer-webgpu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirN = 0;
const outDir = () => join(tmp, `run${dirN++}`);

function rel(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

/** Max |a − b| / max |b| over every entry of every tensor of b. */
function maxRelDiff(a: Record<string, ArrayLike<number>>, b: Record<string, ArrayLike<number>>): number {
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

async function adapterValues(m: PeftModel): Promise<Record<string, Float32Array>> {
  const out: Record<string, Float32Array> = {};
  for (const [k, v] of m.adapterTensorMap('default')) out[k] = (await v.data()) as Float32Array;
  return out;
}

/** a–z are ids 3–28 (inside any fixture vocabulary); 2 is eos, 0 pad. */
const charTokenizer = {
  padTokenId: 0,
  eosTokenId: 2,
  encode: (text: string) => Array.from(text).filter((c) => c >= 'a' && c <= 'z').map((c) => c.charCodeAt(0) - 94),
  decode: (ids: number[]) => ids.filter((i) => i >= 3 && i <= 28).map((i) => String.fromCharCode(94 + i)).join(''),
};

const trainLogs = (t: Trainer): LogEntry[] => t.state.logHistory.filter((e) => e.loss !== undefined && e.learningRate !== undefined);

describe.skipIf(!available)(`Trainer on WebGPU ${available ? '' : `(skipped: ${why})`}`, () => {
  it('runs on webgpu', () => {
    expect(tf.getBackend()).toBe('webgpu');
  });

  it.each([{ gc: false }, { gc: true }])("reproduces HF's llama_lora_train_sched trajectory (gradientCheckpointing: $gc); then generate, evaluatePeftModel and savePretrained run on the trained model", async ({ gc }) => {
    const name = 'llama_lora_train_sched';
    const dir = hfCase(name);
    const meta = JSON.parse(readFileSync(join(dir, '..', 'meta.json'), 'utf8')).cases[name];
    const { file, losses, dataset } = trajectoryCase(dir);

    const base = await AutoModelForCausalLM.fromPretrained(join(dir, 'base'));
    const peft = await PeftModel.fromPretrained(base, join(dir, 'adapter_init'), { isTrainable: true });
    const steps: number = meta.steps ?? meta.max_steps;
    const numTensors: number[] = [];
    const trainer = new Trainer({
      model: peft,
      args: {
        outputDir: outDir(),
        learningRate: meta.lr,
        weightDecay: meta.weight_decay,
        lrSchedulerType: 'linear',
        warmupSteps: meta.warmup_steps ?? 0,
        maxGradNorm: meta.max_grad_norm ?? 0,
        maxSteps: steps,
        perDeviceTrainBatchSize: dataset.length,
        shuffle: false,
        loggingSteps: 1,
        saveStrategy: 'no',
        progressBar: false,
        gradientCheckpointing: gc,
      },
      trainDataset: dataset,
      callbacks: [{ onLog: () => void numTensors.push(tf.memory().numTensors) }],
    });
    await trainer.train();
    expect(peft.model.isGradientCheckpointing).toBe(gc);
    const logs = trainLogs(trainer);
    expect(logs).toHaveLength(steps);
    let maxLoss = 0;
    for (let s = 0; s < steps; s++) maxLoss = Math.max(maxLoss, rel(logs[s].loss!, losses[s]));
    const norms = Array.from(rawToArray(file.tensors.grad_norms_before_clip));
    let maxNorm = 0;
    for (let s = 0; s < steps; s++) maxNorm = Math.max(maxNorm, rel(logs[s].gradNorm!, norms[s]));
    // the peak GPU memory of the steps is in every log entry
    for (const e of logs) {
      expect(e.gpuPeakBytes).toBeGreaterThan(0);
      expect(e.gpuAllocatedBytes).toBeGreaterThanOrEqual(e.gpuPeakBytes!);
    }
    expect(new Set(numTensors.slice(1)).size, `tensors at each log: ${numTensors.join(' ')}`).toBe(1);

    // savePretrained on webgpu, compared with HF's adapter_final
    const out = outDir();
    await peft.savePretrained(out);
    const ours = parseSafetensors(new Uint8Array(readFileSync(join(out, 'adapter_model.safetensors'))));
    const ref = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'adapter_final', 'adapter_model.safetensors'))));
    expect(Object.keys(ours.tensors).sort()).toEqual(Object.keys(ref.tensors).sort());
    const adapter = maxRelDiff(
      Object.fromEntries(Object.keys(ref.tensors).map((k) => [k, rawToArray(ours.tensors[k])])),
      Object.fromEntries(Object.keys(ref.tensors).map((k) => [k, rawToArray(ref.tensors[k])])),
    );
    console.log(`webgpu ${name}${gc ? ' (gradient checkpointing)' : ''}: max rel loss diff ${maxLoss.toExponential(2)}, grad norm ${maxNorm.toExponential(2)}, adapter ${adapter.toExponential(2)}, gpuPeakBytes ${Math.max(...logs.map((e) => e.gpuPeakBytes!))}`);
    expect(maxLoss).toBeLessThan(1e-4);
    expect(maxNorm).toBeLessThan(1e-4);
    expect(adapter).toBeLessThan(1e-4);

    // generate and evaluate the trained model on webgpu
    const before = tf.memory().numTensors;
    const ev = await new Trainer({ model: peft, args: { outputDir: outDir(), progressBar: false, perDeviceEvalBatchSize: 3 }, computeMetrics: (p) => ({ rows: p.predictions.length }) }).evaluate(dataset);
    expect(ev.eval_rows).toBe(dataset.length);
    expect(ev.eval_loss).toBeLessThan(logs.at(-1)!.loss!); // the last update lowered the loss further
    expect(tf.memory().numTensors).toBe(before);
    const gen = await peft.generate({ inputIds: [dataset[0].inputIds.slice(0, 6)], maxNewTokens: 4 });
    expect(gen[0]).toHaveLength(10);
    expect(gen[0].slice(0, 6)).toEqual(dataset[0].inputIds.slice(0, 6));
    const lm = await evaluatePeftModel(peft, charTokenizer, [{ text: 'hello world' }, { text: 'the quick brown fox' }], { taskType: 'language-modeling', progress: false });
    expect(Number.isFinite(lm.metrics.perplexity)).toBe(true);
    const g = await evaluatePeftModel(peft, charTokenizer, [{ input: 'abc', target: 'def' }], { taskType: 'generation', maxNewTokens: 3, progress: false });
    expect(g.predictions).toHaveLength(1);
    expect(Number.isFinite(g.metrics.chrf?.score ?? 0)).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
    trainer.optimizer?.dispose();
    peft.dispose();
  });

  it('a non-finite step is skipped on the device exactly as on cpu (params, moments and step count unchanged); maxNonFiniteSteps still raises, naming the step', async () => {
    const lora = () => getPeftModel(tinyLlama(1), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }));
    const run = async (backend: 'webgpu' | 'cpu', poison: Set<number>, args: Record<string, unknown>) => {
      await tf.setBackend(backend);
      const m = lora();
      for (const [k, v] of m.adapterTensorMap('default')) if (k.includes('lora_B')) v.assign(tf.randomNormal(v.shape, 0, 0.1, 'float32', 5));
      const orig = m.forward.bind(m);
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
      const t = new Trainer({
        model: m,
        args: { outputDir: outDir(), progressBar: false, metricsLog: false, saveStrategy: 'no', perDeviceTrainBatchSize: 4, learningRate: 1e-2, ...args },
        trainDataset: randomExamples(4),
        onWarning: (w) => warnings.push(w),
      });
      const err = await t.train().then(
        () => undefined,
        (e: Error) => e,
      );
      const values = await adapterValues(m);
      const moments: Record<string, Float32Array> = {};
      for (const [k, v] of Object.entries(t.optimizer!.stateTensors())) moments[k] = (await v.data()) as Float32Array;
      const result = { err, warnings, values, moments, stepCount: t.optimizer!.stepCount, logs: trainLogs(t), state: { ...t.state } };
      t.optimizer!.dispose();
      m.dispose();
      return result;
    };
    try {
      // steps 2 and 3 poisoned (the 2nd and 3rd forward); logs every 3 steps, so webgpu reads at 3 and 6
      const args = { maxSteps: 6, loggingSteps: 3, maxNonFiniteSteps: 3 };
      const gpu = await run('webgpu', new Set([2, 3]), args);
      const cpu = await run('cpu', new Set([2, 3]), args);
      expect(gpu.err).toBeUndefined();
      expect(cpu.err).toBeUndefined();
      expect(gpu.warnings).toEqual(cpu.warnings);
      expect(gpu.warnings).toEqual(['Trainer: step 2: loss is NaN; skipping this update (1/3 in a row)', 'Trainer: step 3: loss is NaN; skipping this update (2/3 in a row)']);
      expect(gpu.stepCount).toBe(4);
      expect(cpu.stepCount).toBe(4);
      expect(gpu.state.nonFiniteSteps).toBe(0);
      expect(gpu.logs.map((e) => e.step)).toEqual([3, 6]);
      for (let i = 0; i < 2; i++) expect(rel(gpu.logs[i].loss!, cpu.logs[i].loss!)).toBeLessThan(1e-4);
      // the log at step 3 carries step 3's norm: none (its loss was NaN), as on cpu
      expect(gpu.logs[0].gradNorm).toBeNaN();
      expect(cpu.logs[0].gradNorm).toBeNaN();
      expect(rel(gpu.logs[1].gradNorm!, cpu.logs[1].gradNorm!)).toBeLessThan(1e-4);
      expect(maxRelDiff(gpu.values, cpu.values)).toBeLessThan(1e-4);
      expect(maxRelDiff(gpu.moments, cpu.moments)).toBeLessThan(1e-4);
      // the same run with no poisoned step would differ: the skip is what made them agree
      const clean = await run('cpu', new Set(), args);
      expect(maxRelDiff(clean.values, cpu.values)).toBeGreaterThan(1e-3);

      // every step poisoned: webgpu reads at the first log (step 10) and raises for step 3, as cpu does at step 3
      const all = new Set(Array.from({ length: 100 }, (_, i) => i + 1));
      const gpuErr = await run('webgpu', all, { maxSteps: 20, loggingSteps: 10, maxNonFiniteSteps: 3 });
      const cpuErr = await run('cpu', all, { maxSteps: 20, loggingSteps: 10, maxNonFiniteSteps: 3 });
      for (const r of [gpuErr, cpuErr]) {
        expect(PeftError.isInstance(r.err) && r.err.code).toBe('NON_FINITE_LOSS');
        expect(String(r.err!.message)).toMatch(/step 3: loss is NaN; 3 steps in a row/);
        expect(r.stepCount).toBe(0);
        expect(Object.values(r.moments).every((a) => a.every((x) => x === 0))).toBe(true);
      }
      expect(gpuErr.state.globalStep).toBe(10);
      expect(cpuErr.state.globalStep).toBe(2);
      expect(maxRelDiff(gpuErr.values, cpuErr.values)).toBeLessThan(1e-6);
    } finally {
      await tf.setBackend('webgpu');
    }
  });

  it('a third-party optimizer without supportsApply is called only for finite steps (the Trainer reads the flag for it)', async () => {
    class PlainSGD implements Optimizer {
      readonly name = 'plain-sgd';
      stepCount = 0;
      constructor(private readonly params: NamedParams) {}
      step(grads: Record<string, tf.Tensor>, lr: number): void {
        tf.tidy(() => {
          for (const [n, p] of this.params) if (grads[n]) p.assign(tf.sub(p, tf.mul(grads[n], lr)));
        });
        this.stepCount++;
      }
      stateTensors() {
        return {};
      }
      stateJson() {
        return { name: this.name, step: this.stepCount };
      }
      loadState() {}
      dispose() {}
    }
    const run = async (backend: 'webgpu' | 'cpu') => {
      await tf.setBackend(backend);
      const m = getPeftModel(tinyLlama(1), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }));
      for (const [k, v] of m.adapterTensorMap('default')) if (k.includes('lora_B')) v.assign(tf.randomNormal(v.shape, 0, 0.1, 'float32', 5));
      const orig = m.forward.bind(m);
      let calls = 0;
      m.forward = (inputs) => {
        const out = orig(inputs);
        if (out.loss && ++calls === 2) {
          const bad = tf.mul(out.loss, Infinity) as tf.Scalar;
          out.loss.dispose();
          return { ...out, loss: bad };
        }
        return out;
      };
      const warnings: string[] = [];
      const t = new Trainer({
        model: m,
        args: { outputDir: outDir(), progressBar: false, metricsLog: false, saveStrategy: 'no', perDeviceTrainBatchSize: 4, maxSteps: 4, loggingSteps: 4, learningRate: 0.1, maxGradNorm: 0.5 },
        trainDataset: randomExamples(4),
        optimizerFactory: (params) => new PlainSGD(params),
        onWarning: (w) => warnings.push(w),
      });
      await t.train();
      const out = { warnings, steps: t.optimizer!.stepCount, values: await adapterValues(m) };
      m.dispose();
      return out;
    };
    try {
      const gpu = await run('webgpu');
      const cpu = await run('cpu');
      expect(gpu.steps).toBe(3);
      expect(gpu.warnings).toEqual(cpu.warnings);
      expect(gpu.warnings).toEqual(['Trainer: step 2: loss is Infinity; skipping this update (1/5 in a row)']);
      expect(maxRelDiff(gpu.values, cpu.values)).toBeLessThan(1e-4);
    } finally {
      await tf.setBackend('webgpu');
    }
  });

  it('reads nothing back between log points: one read of the losses and one of the step count per log', async () => {
    const m = getPeftModel(tinyLlama(1), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }));
    const proto = tf.Tensor.prototype as unknown as { data: (...a: unknown[]) => Promise<unknown> };
    const orig = proto.data;
    let reads = 0;
    let counting = false;
    proto.data = function (this: unknown, ...a: unknown[]) {
      if (counting) reads++;
      return orig.apply(this, a);
    };
    const readsAtLog: number[] = [];
    try {
      const t = new Trainer({
        model: m,
        args: { outputDir: outDir(), progressBar: false, metricsLog: false, saveStrategy: 'no', perDeviceTrainBatchSize: 2, gradientAccumulationSteps: 2, maxSteps: 10, loggingSteps: 5 },
        trainDataset: randomExamples(8),
        callbacks: [{ onTrainBegin: () => void (counting = true), onLog: () => void readsAtLog.push(reads) }],
      });
      await t.train();
      counting = false;
      expect(readsAtLog.slice(0, 2)).toEqual([2, 4]);
      t.optimizer!.dispose();
    } finally {
      proto.data = orig;
      m.dispose();
    }
  });

  it('gradient checkpointing: the same LoRA gradients on webgpu, fewer GPU bytes kept for backward, no leak', async () => {
    const m = getPeftModel(tinyLlama(3), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0.2 }));
    for (const [k, v] of m.adapterTensorMap('default')) if (k.includes('lora_B')) v.assign(tf.randomNormal(v.shape, 0, 0.1, 'float32', 5));
    const batch = { inputIds: [[5, 6, 7, 8, 9, 10], [0, 11, 12, 13, 14, 15]], attentionMask: [[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]] };
    const named = [...m.namedParameters()].filter(([, p]) => p.trainable);
    const run = async () => {
      let kept = 0;
      const probe = tf.customGrad(((x: tf.Tensor, save: (t: tf.Tensor[]) => void) => {
        save([]);
        return { value: tf.clone(x), gradFunc: (dy: tf.Tensor) => ((kept = (tf.memory() as { numBytesInGPU?: number }).numBytesInGPU ?? 0), [dy]) };
      }) as unknown as Parameters<typeof tf.customGrad>[0]);
      manualSeed(9);
      m.train();
      const { value, grads } = tf.variableGrads(() => probe(m.forward({ ...batch, labels: batch.inputIds }).loss!) as tf.Scalar, named.map(([, p]) => p));
      const out: Record<string, Float32Array> = {};
      for (const [n, p] of named) out[n] = (await grads[p.name].data()) as Float32Array;
      tf.dispose([value, ...Object.values(grads)]);
      return { grads: out, kept };
    };
    const plain = await run();
    const before = tf.memory().numTensors;
    m.model.gradientCheckpointingEnable();
    const ckpt = await run();
    expect(tf.memory().numTensors).toBe(before);
    console.log(`webgpu: GPU bytes in use when backward starts ${plain.kept} → ${ckpt.kept} with checkpointing`);
    expect(maxRelDiff(ckpt.grads, plain.grads)).toBeLessThan(1e-6);
    expect(ckpt.kept).toBeLessThan(plain.kept);
    m.dispose();
  });

  it('a gated optimizer step (apply false) leaves parameters, moments and step count bit-identical on webgpu, with NaN gradients too', async () => {
    for (const make of [(p: [string, tf.Variable][]) => new AdamW(p), (p: [string, tf.Variable][]) => new SGD(p, { momentum: 0.9, weightDecay: 0.1 })]) {
      const w = tf.variable(tf.randomNormal([3, 5], 0, 1, 'float32', 7), true, 'gated-w');
      const opt = make([['w', w]]);
      const g = tf.randomNormal([3, 5], 0, 1, 'float32', 8);
      const nan = tf.mul(g, NaN);
      const yes = tf.scalar(true, 'bool');
      const no = tf.scalar(false, 'bool');
      opt.step({ w: g }, 1e-2, { apply: yes });
      const snap = async () => [await w.data(), ...(await Promise.all(Object.values(opt.stateTensors()).map((t) => t.data())))].map((a) => Array.from(a));
      const after1 = await snap();
      opt.step({ w: nan }, 1e-2, { apply: no });
      opt.step({ w: g }, 1e-2, { apply: no });
      await opt.sync();
      expect(opt.stepCount).toBe(1);
      expect(await snap()).toEqual(after1);
      opt.step({ w: g }, 1e-2, { apply: yes });
      await opt.sync();
      expect(opt.stepCount).toBe(2);
      expect((await snap())[0]).not.toEqual(after1[0]);
      tf.dispose([w, g, nan, yes, no]);
      opt.dispose();
    }
  });
});

// keep the fixture check honest: the trajectory test above needs these files
it('has the fixture', () => {
  expect(existsSync(join(hfCase('llama_lora_train_sched'), 'adapter_final'))).toBe(true);
});
