import * as tf from '@tensorflow/tfjs';
import {
  PeftError,
  PeftModel,
  PreTrainedModel,
  getFileSystem,
  nodeFileSystem,
  getRngState,
  joinPath,
  manualSeed,
  parseSafetensors,
  rawToTensor,
  readFileChecked,
  readJson,
  setRngState,
  stableJson,
  tensorsToSafetensors,
  createPeakMemoryTracker,
  type FileSystem,
  type PeakMemoryTracker,
} from '@peftjs/core';
import { bestMetricKey, greaterIsBetter, resolveTrainingArguments, type TrainingArguments, type TrainingArgumentsInput } from './args';
import { countLabelTokens, dataCollatorWithPadding, epochOrder, type Batch, type DataCollator, type Example } from './data';
import { recoverCheckpoints } from './checkpoint_recovery';
import { AdamW, HOST_BACKENDS, SGD, clipByNorm, clipGradNormOnDevice, gradNormTensor, type NamedParams, type Optimizer } from './optimizer';
import { LrScheduler, resolveWarmupSteps, type SchedulerState } from './schedule';
import { createTrainProgress, type ProgressSink } from './progress';

/** One entry of `state.logHistory`: training logs carry step, epoch, loss, learningRate, gradNorm; evaluations `eval_*`. */
export interface LogEntry {
  step: number;
  epoch: number;
  loss?: number;
  learningRate?: number;
  gradNorm?: number;
  tokensPerSecond?: number;
  numInputTokensSeen?: number;
  /** On a GPU backend: the peak GPU bytes in use sampled over the steps since the last log (after forward, backward, update). */
  gpuPeakBytes?: number;
  /** On a GPU backend: the bytes the backend's buffer pool holds (free buffers included) at the last sample. */
  gpuAllocatedBytes?: number;
  [key: string]: number | undefined;
}

/** HF's TrainerState (camelCase; written as HF's snake_case trainer_state.json in checkpoints). */
export interface TrainerState {
  globalStep: number;
  /** Fractional epoch: epochs done + fraction of the current one. */
  epoch: number;
  maxSteps: number;
  numTrainEpochs: number;
  logHistory: LogEntry[];
  bestMetric: number | null;
  bestModelCheckpoint: string | null;
  /** Step of the best evaluation so far. */
  bestGlobalStep: number | null;
  numInputTokensSeen: number;
  /** Where the next optimizer step's data starts: epoch and optimizer-step index within it. */
  dataPosition: { epoch: number; stepInEpoch: number };
  /** Evaluations in a row without improvement (early stopping). */
  patienceCounter: number;
  /** Consecutive skipped steps whose loss was not finite. */
  nonFiniteSteps: number;
  /** Losses of the steps since the last log (checkpointed, so a resumed run logs what an uninterrupted one does). */
  loggingWindow: { lossSum: number; count: number };
}

/** What computeMetrics receives: the argmax token of every position and the labels (HF's EvalPrediction after preprocess_logits_for_metrics=argmax). */
export interface EvalPrediction {
  predictions: number[][];
  labelIds: number[][];
  inputIds: number[][];
}

export interface TrainerControl {
  shouldTrainingStop: boolean;
  shouldSave: boolean;
  shouldEvaluate: boolean;
  shouldLog: boolean;
}

/** HF's TrainerCallback: every hook optional, may be async; set fields of `control` to steer the loop. */
export interface TrainerCallback {
  onTrainBegin?(args: TrainingArguments, state: TrainerState, control: TrainerControl): void | Promise<void>;
  onTrainEnd?(args: TrainingArguments, state: TrainerState, control: TrainerControl): void | Promise<void>;
  onEpochBegin?(args: TrainingArguments, state: TrainerState, control: TrainerControl): void | Promise<void>;
  onEpochEnd?(args: TrainingArguments, state: TrainerState, control: TrainerControl): void | Promise<void>;
  onStepBegin?(args: TrainingArguments, state: TrainerState, control: TrainerControl): void | Promise<void>;
  onStepEnd?(args: TrainingArguments, state: TrainerState, control: TrainerControl): void | Promise<void>;
  onLog?(args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: LogEntry): void | Promise<void>;
  onEvaluate?(args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: Record<string, number>): void | Promise<void>;
  onSave?(args: TrainingArguments, state: TrainerState, control: TrainerControl, checkpointDir: string): void | Promise<void>;
}

export interface TrainerOptions {
  /** A PeftModel (its trainable adapter is trained) or a base model (full fine-tuning of its trainable parameters). */
  model: PeftModel | PreTrainedModel;
  args: TrainingArgumentsInput;
  trainDataset?: Example[];
  evalDataset?: Example[];
  /** Default: dynamic padding with `padTokenId` (0 when absent), labels -100 on padding. */
  dataCollator?: DataCollator;
  padTokenId?: number;
  computeMetrics?: (p: EvalPrediction) => Record<string, number> | Promise<Record<string, number>>;
  callbacks?: TrainerCallback[];
  /**
   * Makes the optimizer instead of `args.optim` (HF's `optimizers` / `optimizer_cls_and_kwargs`): called at the
   * start of every train() with the trainable parameters by name. Any `Optimizer` (see AdamW and SGD) works,
   * checkpoints and resuming included: its stateTensors / stateJson go into the checkpoint and loadState reads
   * them back. The learning rate it is given each step still comes from the args' schedule.
   */
  optimizerFactory?: (params: NamedParams, args: TrainingArguments) => Optimizer;
  /** Warnings (non-finite loss …); default console.warn. */
  onWarning?: (message: string) => void;
  fs?: FileSystem;
}

export interface TrainOutput {
  globalStep: number;
  trainingLoss: number;
  metrics: Record<string, number>;
}

/** Checkpoint file names (HF's where HF has one). */
export const CHECKPOINT_FILES = {
  optimizer: 'optimizer.safetensors',
  scheduler: 'scheduler.json',
  rng: 'rng_state.json',
  trainerState: 'trainer_state.json',
  trainingArgs: 'training_args.json',
  /** The exact trainable variables by their in-memory names (prompt-learning adapters save encoder outputs, not weights). */
  trainableParams: 'trainable_params.safetensors',
  fullModel: 'model.safetensors',
} as const;

export const METRICS_LOG = 'metrics.jsonl';

const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

/** One optimizer step whose loss and norm are read (values) or still on the device (device: the k micro-batch losses, then the norm). */
interface StepRecord {
  step: number;
  tokens: number;
  noLabels?: boolean;
  k?: number;
  values?: number[];
  device?: tf.Tensor;
}

/** The step's loss: the micro-batch losses summed in float64 in order (what reading them one by one gave). */
function sumLosses(values: number[], k: number): number {
  let s = 0;
  for (let i = 0; i < k; i++) s += values[i];
  return s;
}


const dynamicImport = (name: string): Promise<any> => import(/* @vite-ignore */ name);

const yieldToEventLoop = (): Promise<void> =>
  new Promise((resolve) => {
    const si = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
    if (si) si(resolve);
    else setTimeout(resolve, 0);
  });

function toSnake(k: string): string {
  return k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
function toCamel(k: string): string {
  return k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

/**
 * HF's Trainer for peftjs models: AdamW (torch's) or SGD, HF's schedules, gradient accumulation with
 * HF 5's loss normalization (the sum of token losses over all micro-batches of a step divided by their
 * label-token count), global-norm clipping, periodic logging / evaluation / checkpoints, resuming, early
 * stopping, best-model loading, a checkpoint when interrupted (an AbortSignal the caller owns, or
 * SIGINT/SIGTERM with `handleSignals`).
 */
export class Trainer {
  readonly model: PeftModel | PreTrainedModel;
  readonly args: TrainingArguments;
  readonly trainDataset?: Example[];
  readonly evalDataset?: Example[];
  readonly dataCollator: DataCollator;
  readonly computeMetrics?: TrainerOptions['computeMetrics'];
  readonly callbacks: TrainerCallback[];
  state: TrainerState;
  optimizer?: Optimizer;
  lrScheduler?: LrScheduler;
  private readonly optimizerFactory?: TrainerOptions['optimizerFactory'];
  private readonly warn: (m: string) => void;
  private readonly fs: FileSystem;
  /** Why the run is stopping early: 'SIGINT' / 'SIGTERM' (handleSignals), or the AbortSignal's reason. */
  private interrupted: string | null = null;
  private interruptCheckpoint: string | null = null;
  private progress: ProgressSink = createTrainProgress(false);
  private bestSnapshot: Map<string, tf.Tensor> | null = null;
  /** The step bestSnapshot was taken at (a resumed run has none for a best step before the resume). */
  private bestSnapshotStep: number | null = null;
  /** Steps not yet read (lazy mode). */
  private pending: StepRecord[] = [];
  private lastLoss: number | undefined;
  private lastGradNorm = NaN;
  private totals = { lossSum: 0, count: 0 };
  private memory: PeakMemoryTracker = createPeakMemoryTracker();

  constructor(opts: TrainerOptions) {
    if (!(opts.model instanceof PeftModel) && !(opts.model instanceof PreTrainedModel)) {
      throw new PeftError('INVALID_ARGUMENT', 'Trainer: model must be a PeftModel or a PreTrainedModel (full fine-tuning)');
    }
    this.model = opts.model;
    this.args = resolveTrainingArguments(opts.args);
    this.trainDataset = opts.trainDataset;
    this.evalDataset = opts.evalDataset;
    if (this.trainDataset !== undefined && !Array.isArray(this.trainDataset)) throw new PeftError('INVALID_ARGUMENT', 'Trainer: trainDataset must be an array of examples');
    if (this.evalDataset !== undefined && !Array.isArray(this.evalDataset)) throw new PeftError('INVALID_ARGUMENT', 'Trainer: evalDataset must be an array of examples');
    const pad = opts.padTokenId ?? (this.model instanceof PeftModel ? this.model.model.config.padTokenId : this.model.config.padTokenId) ?? 0;
    const base = this.model instanceof PeftModel ? this.model.model : this.model;
    // a causal LM's labels are checked against its vocabulary in the collator (on the host)
    const vocabSize = base.taskType === 'CAUSAL_LM' ? base.config.vocabSize : undefined;
    this.dataCollator = opts.dataCollator ?? dataCollatorWithPadding({ padTokenId: pad, vocabSize });
    this.computeMetrics = opts.computeMetrics;
    this.callbacks = opts.callbacks ?? [];
    if (opts.optimizerFactory !== undefined && typeof opts.optimizerFactory !== 'function') throw new PeftError('INVALID_ARGUMENT', 'Trainer: optimizerFactory must be a function (params, args) => Optimizer');
    this.optimizerFactory = opts.optimizerFactory;
    this.warn = opts.onWarning ?? ((m) => console.warn(m));
    this.fs = opts.fs ?? getFileSystem();
    this.state = this.freshState(0, this.args.numTrainEpochs);
  }

  private freshState(maxSteps: number, numTrainEpochs: number): TrainerState {
    return {
      globalStep: 0,
      epoch: 0,
      maxSteps,
      numTrainEpochs,
      logHistory: [],
      bestMetric: null,
      bestModelCheckpoint: null,
      bestGlobalStep: null,
      numInputTokensSeen: 0,
      dataPosition: { epoch: 0, stepInEpoch: 0 },
      patienceCounter: 0,
      nonFiniteSteps: 0,
      loggingWindow: { lossSum: 0, count: 0 },
    };
  }

  /** Parameters the optimizer updates, by their in-memory names. */
  trainableParameters(): NamedParams {
    return [...this.model.namedParameters()].filter(([, p]) => p.trainable);
  }

  private forward(batch: Batch, labels: boolean): { loss?: tf.Scalar; logits: tf.Tensor } {
    const inputs = { inputIds: batch.inputIds, attentionMask: batch.attentionMask, ...(labels ? { labels: batch.labels } : {}) };
    return this.model.forward(inputs);
  }

  /** Creates the optimizer (when absent) over the trainable parameters. */
  createOptimizer(): Optimizer {
    if (this.optimizer) return this.optimizer;
    const params = this.trainableParameters();
    if (!params.length) throw new PeftError('INVALID_ARGUMENT', 'Trainer: the model has no trainable parameters (loaded with isTrainable: false?)');
    const a = this.args;
    if (this.optimizerFactory) {
      const made = this.optimizerFactory(params, a);
      if (!made || typeof made.step !== 'function' || typeof made.stateTensors !== 'function' || typeof made.loadState !== 'function') {
        throw new PeftError('INVALID_ARGUMENT', 'Trainer: optimizerFactory must return an Optimizer (name, step, stepCount, stateTensors, stateJson, loadState, dispose)');
      }
      return (this.optimizer = made);
    }
    this.optimizer =
      a.optim === 'sgd'
        ? new SGD(params, { momentum: a.sgdMomentum, weightDecay: a.weightDecay })
        : new AdamW(params, { beta1: a.adamBeta1, beta2: a.adamBeta2, eps: a.adamEpsilon, weightDecay: a.weightDecay });
    return this.optimizer;
  }

  private batchesPerEpoch(n: number): number {
    const bs = this.args.perDeviceTrainBatchSize;
    return this.args.dataloaderDropLast ? Math.floor(n / bs) : Math.ceil(n / bs);
  }

  private async fire<K extends keyof TrainerCallback>(hook: K, control: TrainerControl, ...extra: unknown[]): Promise<void> {
    for (const cb of this.callbacks) {
      const fn = cb[hook] as ((...a: unknown[]) => unknown) | undefined;
      if (fn) await fn.call(cb, this.args, this.state, control, ...extra);
    }
  }

  /**
   * Trains. `resumeFromCheckpoint` (here or in args): true for the latest checkpoint in outputDir, or a
   * checkpoint folder; training then continues exactly as if never stopped.
   *
   * Interrupting: when `signal` (an AbortSignal the caller owns) aborts — or, with `args.handleSignals`,
   * on SIGINT / SIGTERM — the step in progress finishes, a checkpoint is written, and train() rejects with
   * a TrainingInterruptedError naming it (resume with `resumeFromCheckpoint: true`). The Trainer never
   * exits the process: what to do next (an exit code) is the caller's.
   */
  async train(opts: { resumeFromCheckpoint?: boolean | string | null; signal?: AbortSignal } = {}): Promise<TrainOutput> {
    const args = this.args;
    const data = this.trainDataset;
    if (!data || !data.length) throw new PeftError('INVALID_ARGUMENT', 'Trainer.train: trainDataset is empty or missing');
    const batchesPerEpoch = this.batchesPerEpoch(data.length);
    if (batchesPerEpoch < 1) throw new PeftError('INVALID_ARGUMENT', `Trainer.train: ${data.length} examples make no full batch of ${args.perDeviceTrainBatchSize} (dataloaderDropLast)`);
    const gas = args.gradientAccumulationSteps;
    const stepsPerEpoch = Math.max(1, Math.ceil(batchesPerEpoch / gas));
    const maxSteps = args.maxSteps > 0 ? args.maxSteps : Math.ceil(args.numTrainEpochs * stepsPerEpoch);
    const numEpochs = Math.ceil(maxSteps / stepsPerEpoch);

    const resume = opts.resumeFromCheckpoint ?? args.resumeFromCheckpoint;
    // outputDir is only touched when something goes there: a run with saveStrategy 'no' and no metrics
    // log needs no writable file system (a browser tab training with fetch alone)
    const writes = args.saveStrategy !== 'no' || args.metricsLog;
    // what a killed earlier run left: a checkpoint between its renames, temp folders and files
    if (writes || resume) await recoverCheckpoints(this.fs, args.outputDir, CHECKPOINT_FILES.trainerState);
    let resumeDir: string | null = null;
    if (resume === true) {
      resumeDir = await this.latestCheckpoint();
      if (!resumeDir) this.warn(`Trainer: resumeFromCheckpoint is set but ${args.outputDir} has no checkpoint; starting from scratch`);
    } else if (typeof resume === 'string') resumeDir = resume;

    if (args.evalStrategy !== 'no' && !this.evalDataset?.length) {
      throw new PeftError('INVALID_CONFIG', `TrainingArguments: evalStrategy is '${args.evalStrategy}' but the Trainer has no evalDataset`);
    }
    this.state = this.freshState(maxSteps, numEpochs);
    manualSeed(args.seed);
    // every train() starts a fresh optimizer (HF's behaviour); a resumed one gets its state from the checkpoint
    this.optimizer?.dispose();
    this.optimizer = undefined;
    const optimizer = this.createOptimizer();
    const warmup = resolveWarmupSteps(args.warmupSteps, args.warmupRatio, maxSteps);
    this.lrScheduler = new LrScheduler({ type: args.lrSchedulerType, baseLr: args.learningRate, warmupSteps: warmup, totalSteps: maxSteps });
    if (resumeDir) await this.loadCheckpoint(resumeDir);
    if (writes) await this.fs.mkdirp(args.outputDir);
    if (args.metricsLog) {
      // the log restarts from what the checkpoint knew: entries after it belong to a run that was cut short
      await this.fs.writeFileAtomic(joinPath(args.outputDir, METRICS_LOG), this.state.logHistory.map((e) => JSON.stringify(e) + '\n').join(''));
    }

    if (args.gradientCheckpointing) {
      const base = this.model instanceof PeftModel ? this.model.model : this.model;
      base.gradientCheckpointingEnable();
    }
    const params = this.trainableParameters();
    const varNames = new Map(params.map(([n, p]) => [p.name, n]));
    const vars = params.map(([, p]) => p);
    this.model.train();
    this.progress = createTrainProgress(args.progressBar);
    const control: TrainerControl = { shouldTrainingStop: false, shouldSave: false, shouldEvaluate: false, shouldLog: false };
    this.interrupted = null;
    this.interruptCheckpoint = null;
    const removeSignals = this.watchInterrupts(opts.signal);
    const t0 = Date.now();
    const startStep = this.state.globalStep;
    const startTokens = this.state.numInputTokensSeen;
    this.totals = { lossSum: 0, count: 0 };
    this.pending = [];
    this.lastLoss = undefined;
    this.lastGradNorm = NaN;
    this.memory = createPeakMemoryTracker();
    let runPeakBytes = 0;
    // GPU backends: losses, norms and non-finite flags stay on the device until a log / eval / save point
    const lazy = !HOST_BACKENDS.has(tf.getBackend());
    let windowStart = Date.now();
    let windowTokens = 0;

    await this.fire('onTrainBegin', control);
    try {
      outer: for (let epoch = this.state.dataPosition.epoch; epoch < numEpochs; epoch++) {
        const order = epochOrder(data.length, epoch, args.seed, args.shuffle);
        const startIdx = epoch === this.state.dataPosition.epoch ? this.state.dataPosition.stepInEpoch : 0;
        if (startIdx === 0) await this.fire('onEpochBegin', control);
        for (let s = startIdx; s < stepsPerEpoch; s++) {
          if (this.interrupted && this.state.globalStep === startStep) break outer; // aborted before any step: nothing to save
          await this.fire('onStepBegin', control);
          const micro: Batch[] = [];
          for (let b = s * gas; b < Math.min((s + 1) * gas, batchesPerEpoch); b++) {
            const idx = order.slice(b * args.perDeviceTrainBatchSize, (b + 1) * args.perDeviceTrainBatchSize);
            micro.push(this.dataCollator(idx.map((i) => data[i])));
          }
          const lr = this.lrScheduler.lr;
          const rec = await this.trainingStep(micro, vars, varNames, optimizer, lr, lazy);
          this.pending.push(rec);
          if (!lazy) await this.settleSteps();
          const tokens = rec.tokens;
          this.lrScheduler.step();
          this.state.globalStep++;
          this.state.epoch = epoch + (s + 1) / stepsPerEpoch;
          this.state.dataPosition = s + 1 < stepsPerEpoch ? { epoch, stepInEpoch: s + 1 } : { epoch: epoch + 1, stepInEpoch: 0 };
          this.state.numInputTokensSeen += tokens;
          windowTokens += tokens;
          const step = this.state.globalStep;
          const elapsed = (Date.now() - t0) / 1000;
          const tokPerSec = (this.state.numInputTokensSeen - startTokens) / Math.max(elapsed, 1e-9);
          this.progress.update({
            step,
            total: maxSteps,
            loss: this.lastLoss, // eager: this step's; lazy: the latest read
            lr,
            tokensPerSecond: tokPerSec,
            etaSeconds: ((maxSteps - step) * elapsed) / Math.max(1, step - startStep),
            epoch: this.state.epoch,
          });

          control.shouldLog = step % args.loggingSteps === 0 || (args.loggingFirstStep && step === 1) || step >= maxSteps;
          control.shouldEvaluate = args.evalStrategy === 'steps' && step % (args.evalSteps ?? args.loggingSteps) === 0;
          control.shouldSave = args.saveStrategy === 'steps' && step % args.saveSteps === 0;
          const epochEnd = s + 1 === stepsPerEpoch;
          if (epochEnd) {
            if (args.evalStrategy === 'epoch') control.shouldEvaluate = true;
            if (args.saveStrategy === 'epoch') control.shouldSave = true;
          }
          if (step >= maxSteps) {
            control.shouldTrainingStop = true;
            if (args.saveStrategy !== 'no') control.shouldSave = true;
          }
          await this.fire('onStepEnd', control);

          if (control.shouldLog || control.shouldEvaluate || control.shouldSave || control.shouldTrainingStop || this.interrupted) await this.settleSteps();
          if (control.shouldLog) {
            const now = Date.now();
            const entry: LogEntry = {
              step,
              epoch: round(this.state.epoch),
              loss: this.state.loggingWindow.count ? this.state.loggingWindow.lossSum / this.state.loggingWindow.count : NaN,
              gradNorm: this.lastGradNorm,
              learningRate: lr,
              tokensPerSecond: windowTokens / Math.max((now - windowStart) / 1000, 1e-9),
              numInputTokensSeen: this.state.numInputTokensSeen,
            };
            if (this.memory.onGpu) {
              entry.gpuPeakBytes = this.memory.peakBytes;
              entry.gpuAllocatedBytes = this.memory.allocatedBytes;
              runPeakBytes = Math.max(runPeakBytes, this.memory.peakBytes);
              this.memory.reset();
            }
            this.state.loggingWindow = { lossSum: 0, count: 0 };
            windowStart = now;
            windowTokens = 0;
            await this.log(entry, control);
          }
          if (control.shouldEvaluate && this.evalDataset?.length) await this.evaluateDuringTraining(control);
          if (control.shouldSave || this.interrupted) {
            const saved = await this.saveCheckpoint(control);
            if (this.interrupted) this.interruptCheckpoint = saved;
          }
          control.shouldLog = control.shouldEvaluate = control.shouldSave = false;
          if (epochEnd) await this.fire('onEpochEnd', control);
          if (this.interrupted) break outer;
          if (control.shouldTrainingStop) break outer;
          await yieldToEventLoop();
        }
      }
      await this.settleSteps();
    } finally {
      tf.dispose(this.pending.map((r) => r.device).filter((t): t is tf.Tensor => t !== undefined));
      this.pending = [];
      removeSignals();
      this.progress.done();
    }
    if (this.interrupted) {
      const where = this.interruptCheckpoint ? `checkpoint written to ${this.interruptCheckpoint}` : 'no checkpoint written (no step ran)';
      this.progress.message(`Trainer: ${this.interrupted}: ${where} at step ${this.state.globalStep}`);
      throw new TrainingInterruptedError(this.interrupted, this.interruptCheckpoint, this.state.globalStep);
    }

    try {
      if (args.loadBestModelAtEnd) await this.restoreBestModel();
    } finally {
      tf.dispose([...(this.bestSnapshot?.values() ?? [])]);
      this.bestSnapshot = null;
      this.bestSnapshotStep = null;
    }
    const runtime = (Date.now() - t0) / 1000;
    const metrics: Record<string, number> = {
      trainRuntime: runtime,
      trainSamplesPerSecond: ((this.state.globalStep - startStep) * args.perDeviceTrainBatchSize * gas) / Math.max(runtime, 1e-9),
      trainStepsPerSecond: (this.state.globalStep - startStep) / Math.max(runtime, 1e-9),
      trainTokensPerSecond: (this.state.numInputTokensSeen - startTokens) / Math.max(runtime, 1e-9),
      trainLoss: this.totals.count ? this.totals.lossSum / this.totals.count : NaN,
    };
    if (this.memory.onGpu) metrics.trainGpuPeakBytes = Math.max(runPeakBytes, this.memory.peakBytes);
    const summary: LogEntry = { step: this.state.globalStep, epoch: round(this.state.epoch), ...metrics };
    await this.log(summary, control, false);
    await this.fire('onTrainEnd', control);
    return { globalStep: this.state.globalStep, trainingLoss: metrics.trainLoss, metrics };
  }

  /**
   * One optimizer step over micro-batches: gradients of Σᵢ lossᵢ·nᵢ/N (nᵢ label tokens of micro-batch i,
   * N of all), so k micro-batches equal one step on their concatenation. A non-finite loss or gradient
   * norm skips the update (with a warning) and counts towards maxNonFiniteSteps.
   *
   * Eager (cpu, wasm): the losses and the norm are read before the update, which is decided and clipped
   * in JS exactly as torch does. Lazy (GPU backends): nothing is read; the clip scale is a tensor, the
   * update is gated on the device by "loss and norm finite", and the losses and norm stay on the device
   * in the returned record until `settleSteps` reads them.
   */
  private async trainingStep(micro: Batch[], vars: tf.Variable[], varNames: Map<string, string>, optimizer: Optimizer, lr: number, lazy: boolean): Promise<StepRecord> {
    const counts = micro.map(countLabelTokens);
    const total = counts.reduce((a, b) => a + b, 0);
    const tokens = micro.reduce((a, b) => a + b.inputIds.length * (b.inputIds[0]?.length ?? 0), 0);
    const step = this.state.globalStep + 1;
    let grads: Record<string, tf.Tensor> | null = null;
    const losses: tf.Scalar[] = [];
    const mem = this.memory;
    try {
      for (let i = 0; i < micro.length; i++) {
        if (!counts[i]) continue;
        const w = counts[i] / total;
        const { value, grads: g } = tf.variableGrads(() => {
          const { loss } = this.forward(micro[i], true);
          if (!loss) throw new PeftError('INVALID_ARGUMENT', 'Trainer: the model returned no loss for a batch with labels');
          mem.sample(); // after the forward pass: the activations kept for backward are all alive
          return (w === 1 ? loss : tf.mul(loss, w)) as tf.Scalar;
        }, vars);
        mem.sample(); // after backward
        losses.push(value);
        const named: Record<string, tf.Tensor> = {};
        for (const [k, t] of Object.entries(g)) named[varNames.get(k) ?? k] = t;
        if (!grads) grads = named;
        else {
          const acc: Record<string, tf.Tensor> = grads;
          for (const [k, t] of Object.entries(named)) {
            const prev = acc[k];
            acc[k] = prev ? tf.add(prev, t) : t;
            if (prev) tf.dispose([prev, t]);
          }
        }
      }
      if (!grads) return { step, tokens, noLabels: true };
      const k = losses.length;
      if (!lazy) {
        const packed = tf.tidy(() => tf.concat([...losses.map((l) => l.reshape([1])), gradNormTensor(grads!).reshape([1])]));
        const vals = await packed.data();
        packed.dispose();
        const rec: StepRecord = { step, tokens, values: Array.from(vals) as number[], k };
        const loss = sumLosses(rec.values!, k);
        const norm = rec.values![k];
        if (Number.isFinite(loss) && Number.isFinite(norm)) {
          const clipped = clipByNorm(grads, norm, this.args.maxGradNorm);
          try {
            optimizer.step(clipped, lr);
            await this.afterOptimizerStep(clipped);
          } finally {
            if (clipped !== grads) tf.dispose(Object.values(clipped));
          }
          mem.sample(); // after the update
        }
        return rec;
      }
      const { norm, grads: clipped } = clipGradNormOnDevice(grads, this.args.maxGradNorm);
      try {
        const finite = tf.tidy(() => tf.logicalAnd(tf.all(tf.isFinite(tf.stack(losses))), tf.isFinite(norm)) as tf.Scalar);
        try {
          if (optimizer.supportsApply) optimizer.step(clipped, lr, { apply: finite });
          else if ((await finite.data())[0]) optimizer.step(clipped, lr); // a third-party optimizer: decide by a read
          await this.afterOptimizerStep(clipped, finite);
        } finally {
          finite.dispose();
        }
        mem.sample(); // after the update
        const device = tf.tidy(() => tf.concat([...losses.map((l) => l.reshape([1])), norm.reshape([1])]));
        return { step, tokens, device, k };
      } finally {
        norm.dispose();
        if (clipped !== grads) tf.dispose(Object.values(clipped));
      }
    } finally {
      tf.dispose(losses);
      if (grads) tf.dispose(Object.values(grads));
    }
  }

  /**
   * The hook for methods that need post-update work with the step's gradients (AdaLoRA's rank allocator,
   * HF's `update_and_allocate(step)` after `optimizer.step()`): PeftModel.afterOptimizerStep with the
   * 0-based step index, the gradients the optimizer applied (clipped) and, on GPU backends, the device flag
   * that gated the update. A skipped step (non-finite loss or norm, read on cpu/wasm) does not call it.
   */
  private async afterOptimizerStep(grads: Record<string, tf.Tensor>, apply?: tf.Scalar): Promise<void> {
    if (this.model instanceof PeftModel) await this.model.afterOptimizerStep(this.state.globalStep, grads, { apply });
  }

  /**
   * Reads the pending steps' losses and norms (one asynchronous read for all of them) and settles each in
   * order, exactly as if it had been read at its own step: warnings, the non-finite count and its error,
   * the logging window and the running totals.
   */
  private async settleSteps(): Promise<void> {
    const pending = this.pending;
    if (!pending.length) return;
    this.pending = [];
    const onDevice = pending.filter((r) => r.device);
    if (onDevice.length) {
      let vals: Float32Array | Int32Array | Uint8Array;
      try {
        const all = onDevice.length === 1 ? onDevice[0].device! : tf.concat(onDevice.map((r) => r.device!));
        vals = await all.data();
        if (all !== onDevice[0].device) all.dispose();
      } finally {
        for (const r of onDevice) r.device!.dispose();
      }
      let off = 0;
      for (const r of onDevice) {
        r.values = Array.from(vals.subarray(off, off + r.k! + 1));
        r.device = undefined;
        off += r.k! + 1;
      }
      await this.optimizer?.sync?.();
    }
    for (const r of pending) this.settle(r);
  }

  /** A settled step's loss and norm, what the old per-step read gave. */
  private settle(r: StepRecord): void {
    let loss: number;
    let gradNorm: number;
    if (r.noLabels) {
      loss = NaN;
      gradNorm = NaN;
      this.skipStep(r.step, 'no label tokens in the batch (every label is -100)');
    } else {
      loss = sumLosses(r.values!, r.k!);
      const norm = r.values![r.k!];
      gradNorm = NaN;
      if (!Number.isFinite(loss)) this.skipStep(r.step, `loss is ${loss}`);
      else {
        gradNorm = norm;
        if (!Number.isFinite(norm)) this.skipStep(r.step, `gradient norm is ${norm}`);
        else this.state.nonFiniteSteps = 0;
      }
    }
    this.lastGradNorm = gradNorm;
    this.lastLoss = Number.isFinite(loss) ? loss : undefined;
    if (Number.isFinite(loss)) {
      this.state.loggingWindow.lossSum += loss;
      this.state.loggingWindow.count++;
      this.totals.lossSum += loss;
      this.totals.count++;
    }
  }

  private skipStep(step: number, why: string): void {
    this.state.nonFiniteSteps++;
    const n = this.state.nonFiniteSteps;
    if (n >= this.args.maxNonFiniteSteps) {
      throw new PeftError(
        'NON_FINITE_LOSS',
        `Trainer: step ${step}: ${why}; ${n} steps in a row had a non-finite loss or gradient, stopping (lower learningRate, check the data for empty or broken examples, or raise maxNonFiniteSteps)`,
      );
    }
    this.warn(`Trainer: step ${step}: ${why}; skipping this update (${n}/${this.args.maxNonFiniteSteps} in a row)`);
  }

  private async log(entry: LogEntry, control: TrainerControl, show = true): Promise<void> {
    this.state.logHistory.push(entry);
    if (this.args.metricsLog) await this.appendMetrics(entry);
    if (show && entry.loss !== undefined && this.args.progressBar !== false) {
      /* the progress bar already shows the running values */
    }
    await this.fire('onLog', control, entry);
  }

  private async appendMetrics(entry: LogEntry): Promise<void> {
    const path = joinPath(this.args.outputDir, METRICS_LOG);
    const line = JSON.stringify({ ...entry, time: new Date().toISOString() }) + '\n';
    if (this.fs === nodeFileSystem) {
      // Node: a plain append (a line is small; a reader sees whole lines or none of the last one)
      const fsp = await dynamicImport('node:fs/promises');
      await fsp.appendFile(path, line);
      return;
    }
    // any other FileSystem: read + atomic rewrite
    let prev = '';
    if (await this.fs.exists(path)) prev = new TextDecoder().decode(await this.fs.readFile(path));
    await this.fs.writeFileAtomic(path, prev + line);
  }

  /** Evaluation loss (mean over every label token of evalDataset) and computeMetrics, as `eval_*`. */
  async evaluate(evalDataset: Example[] | undefined = this.evalDataset, opts: { metricKeyPrefix?: string } = {}): Promise<Record<string, number>> {
    if (!evalDataset?.length) throw new PeftError('INVALID_ARGUMENT', 'Trainer.evaluate: no evalDataset');
    const prefix = opts.metricKeyPrefix ?? 'eval';
    const wasTraining = (this.model as { training?: boolean }).training ?? false;
    this.model.eval();
    const t0 = Date.now();
    let nll = 0;
    let count = 0;
    const pred: EvalPrediction = { predictions: [], labelIds: [], inputIds: [] };
    const bs = this.args.perDeviceEvalBatchSize;
    // the batches' losses and argmaxes stay on the device and are read once at the end (no per-batch stall on a GPU)
    const losses: { loss: tf.Tensor; n: number }[] = [];
    const argmaxes: tf.Tensor[] = [];
    try {
      for (let i = 0; i < evalDataset.length; i += bs) {
        const batch = this.dataCollator(evalDataset.slice(i, i + bs));
        const n = countLabelTokens(batch);
        const { loss, argmax } = tf.tidy(() => {
          const out = this.forward(batch, n > 0);
          return { loss: out.loss, argmax: this.computeMetrics ? tf.argMax(out.logits, -1) : undefined };
        });
        if (loss) losses.push({ loss, n });
        if (argmax) {
          argmaxes.push(argmax);
          pred.labelIds.push(...batch.labels);
          pred.inputIds.push(...batch.inputIds);
        }
        await yieldToEventLoop();
      }
      if (losses.length) {
        const all = tf.tidy(() => tf.concat(losses.map((l) => l.loss.reshape([1]))));
        const vals = await all.data();
        all.dispose();
        losses.forEach(({ n }, j) => {
          if (n > 0) {
            nll += vals[j] * n;
            count += n;
          }
        });
      }
      for (const a of argmaxes) pred.predictions.push(...((await a.array()) as number[][]));
    } finally {
      tf.dispose([...losses.map((l) => l.loss), ...argmaxes]);
      if (wasTraining) this.model.train();
    }
    const runtime = (Date.now() - t0) / 1000;
    const metrics: Record<string, number> = { [`${prefix}_loss`]: count ? nll / count : NaN };
    if (this.computeMetrics) {
      const extra = await this.computeMetrics(pred);
      for (const [k, v] of Object.entries(extra)) metrics[k.startsWith(`${prefix}_`) ? k : `${prefix}_${k}`] = v;
    }
    metrics[`${prefix}_runtime`] = runtime;
    metrics[`${prefix}_samples_per_second`] = evalDataset.length / Math.max(runtime, 1e-9);
    return metrics;
  }

  private async evaluateDuringTraining(control: TrainerControl): Promise<void> {
    const metrics = await this.evaluate();
    await this.log({ step: this.state.globalStep, epoch: round(this.state.epoch), ...metrics }, control);
    await this.fire('onEvaluate', control, metrics);
    const key = bestMetricKey(this.args);
    const value = metrics[key];
    if (value === undefined) {
      if (this.args.loadBestModelAtEnd || this.args.earlyStoppingPatience) {
        throw new PeftError('INVALID_CONFIG', `TrainingArguments: metricForBestModel "${this.args.metricForBestModel}" is not among the evaluation metrics (${Object.keys(metrics).join(', ')})`);
      }
      return;
    }
    const gib = greaterIsBetter(this.args);
    const best = this.state.bestMetric;
    const improved = best === null || (gib ? value > best : value < best);
    const bigEnough = best === null || Math.abs(value - best) > this.args.earlyStoppingThreshold;
    if (improved) {
      this.state.bestMetric = value;
      this.state.bestGlobalStep = this.state.globalStep;
      if (this.args.loadBestModelAtEnd) {
        tf.dispose([...(this.bestSnapshot?.values() ?? [])]);
        this.bestSnapshot = new Map(this.trainableParameters().map(([n, p]) => [n, p.clone()]));
        this.bestSnapshotStep = this.state.globalStep;
      }
    }
    if (this.args.earlyStoppingPatience > 0) {
      if (improved && bigEnough) this.state.patienceCounter = 0;
      else this.state.patienceCounter++;
      if (this.state.patienceCounter >= this.args.earlyStoppingPatience) control.shouldTrainingStop = true;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Checkpoints

  private isPeft(): boolean {
    return this.model instanceof PeftModel;
  }

  /** Saves the adapter (HF PEFT's files) or, for full fine-tuning, config.json + model.safetensors. */
  async saveModel(dir: string = this.args.outputDir): Promise<void> {
    const fs = this.fs;
    await fs.mkdirp(dir);
    if (this.model instanceof PeftModel) {
      await this.model.savePretrained(dir, { fs });
      return;
    }
    const model = this.model;
    const bytes = await tensorsToSafetensors(model.stateDict(), { metadata: { format: 'pt' } });
    await fs.writeFileAtomic(joinPath(dir, CHECKPOINT_FILES.fullModel), bytes);
    await fs.writeFileAtomic(joinPath(dir, 'config.json'), stableJson(model.config.raw));
  }

  /** The checkpoint folders of outputDir, oldest first. */
  async listCheckpoints(dir: string = this.args.outputDir): Promise<{ step: number; path: string }[]> {
    if (!(await this.fs.exists(dir))) return [];
    const out: { step: number; path: string }[] = [];
    for (const name of await this.fs.readdir(dir)) {
      const m = CHECKPOINT_RE.exec(name);
      if (m && (await this.fs.exists(joinPath(dir, name, CHECKPOINT_FILES.trainerState)))) out.push({ step: Number(m[1]), path: joinPath(dir, name) });
    }
    return out.sort((a, b) => a.step - b.step);
  }

  async latestCheckpoint(dir: string = this.args.outputDir): Promise<string | null> {
    const all = await this.listCheckpoints(dir);
    return all.length ? all[all.length - 1].path : null;
  }

  /**
   * Writes `checkpoint-<step>/` atomically: every file goes into a temporary folder that is renamed into
   * place when complete, so a checkpoint folder is either whole or absent.
   */
  async saveCheckpoint(control?: TrainerControl): Promise<string> {
    const fs = this.fs;
    const args = this.args;
    const step = this.state.globalStep;
    const name = `checkpoint-${step}`;
    const final = joinPath(args.outputDir, name);
    const tmp = joinPath(args.outputDir, `.tmp-${name}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`);
    await fs.mkdirp(tmp);
    try {
      await this.saveModel(tmp);
      if (this.isPeft()) {
        const vars = Object.fromEntries(this.trainableParameters());
        await fs.writeFileAtomic(joinPath(tmp, CHECKPOINT_FILES.trainableParams), await tensorsToSafetensors(vars));
      }
      const opt = this.optimizer;
      if (opt) {
        const bytes = await tensorsToSafetensors(opt.stateTensors(), { metadata: { optimizer: JSON.stringify(opt.stateJson()) } });
        await fs.writeFileAtomic(joinPath(tmp, CHECKPOINT_FILES.optimizer), bytes);
      }
      if (this.lrScheduler) await fs.writeFileAtomic(joinPath(tmp, CHECKPOINT_FILES.scheduler), stableJson(this.lrScheduler.stateDict()));
      await fs.writeFileAtomic(joinPath(tmp, CHECKPOINT_FILES.rng), stableJson({ peftjs_rng: getRngState(), seed: args.seed, data_position: this.state.dataPosition }));
      if (this.state.bestGlobalStep === step) this.state.bestModelCheckpoint = final;
      await fs.writeFileAtomic(joinPath(tmp, CHECKPOINT_FILES.trainerState), stableJson(this.trainerStateJson()));
      await fs.writeFileAtomic(joinPath(tmp, CHECKPOINT_FILES.trainingArgs), stableJson(Object.fromEntries(Object.entries(args).map(([k, v]) => [toSnake(k), v]))));
      if (await fs.exists(final)) {
        const old = `${tmp}-old`;
        await fs.rename(final, old);
        await fs.rename(tmp, final);
        await fs.remove(old);
      } else await fs.rename(tmp, final);
    } catch (e) {
      await fs.remove(tmp).catch(() => undefined);
      throw e;
    }
    await this.pruneCheckpoints();
    if (control) await this.fire('onSave', control, final);
    return final;
  }

  private trainerStateJson(): Record<string, unknown> {
    const s = this.state;
    return {
      global_step: s.globalStep,
      epoch: s.epoch,
      max_steps: s.maxSteps,
      num_train_epochs: s.numTrainEpochs,
      best_metric: s.bestMetric,
      best_model_checkpoint: s.bestModelCheckpoint,
      best_global_step: s.bestGlobalStep,
      num_input_tokens_seen: s.numInputTokensSeen,
      logging_steps: this.args.loggingSteps,
      eval_steps: this.args.evalSteps ?? this.args.loggingSteps,
      save_steps: this.args.saveSteps,
      train_batch_size: this.args.perDeviceTrainBatchSize,
      log_history: s.logHistory.map((e) => Object.fromEntries(Object.entries(e).map(([k, v]) => [toSnake(k), v]))),
      peftjs: { data_position: s.dataPosition, patience_counter: s.patienceCounter, non_finite_steps: s.nonFiniteSteps, logging_window: s.loggingWindow },
    };
  }

  private async pruneCheckpoints(): Promise<void> {
    const limit = this.args.saveTotalLimit;
    if (!limit) return;
    const all = await this.listCheckpoints();
    const best = this.state.bestModelCheckpoint;
    let excess = all.length - limit;
    for (const c of all) {
      if (excess <= 0) break;
      if (c.path === best) continue;
      await this.fs.remove(c.path);
      excess--;
    }
  }

  /**
   * loadBestModelAtEnd: the best step's weights, from this run's snapshot when it took one at that step,
   * else (a run resumed after its best evaluation) from the best step's checkpoint folder.
   */
  private async restoreBestModel(): Promise<void> {
    const step = this.state.bestGlobalStep;
    if (step === null) return;
    if (this.bestSnapshot && this.bestSnapshotStep === step) {
      const byName = new Map(this.trainableParameters());
      for (const [n, t] of this.bestSnapshot) byName.get(n)?.assign(t);
      return;
    }
    const candidates = [this.state.bestModelCheckpoint, joinPath(this.args.outputDir, `checkpoint-${step}`)].filter((d): d is string => !!d);
    for (const dir of candidates) {
      if (await this.fs.exists(joinPath(dir, CHECKPOINT_FILES.trainerState))) {
        await this.loadParameters(dir);
        return;
      }
    }
    this.warn(`Trainer: loadBestModelAtEnd: the best step ${step} has no checkpoint in ${this.args.outputDir} (saveSteps should be a multiple of evalSteps); keeping the last step's weights`);
  }

  /** The trainable parameters (the whole model for full fine-tuning) from a checkpoint folder. */
  private async loadParameters(dir: string): Promise<void> {
    const fs = this.fs;
    const paramsFile = joinPath(dir, this.isPeft() ? CHECKPOINT_FILES.trainableParams : CHECKPOINT_FILES.fullModel);
    if (!(await fs.exists(paramsFile))) throw new PeftError('FILE_NOT_FOUND', `checkpoint ${dir}: ${paramsFile.slice(dir.length + 1)} is missing (not a checkpoint folder, or one written by something else)`);
    const file = parseSafetensors(await readFileChecked(paramsFile, fs), paramsFile);
    const targets = this.isPeft() ? new Map(this.trainableParameters()) : new Map(this.model.namedParameters());
    // every tensor checked before any parameter is changed: a bad file leaves the model as it was
    for (const [n, v] of targets) {
      const raw = Object.hasOwn(file.tensors, n) ? file.tensors[n] : undefined;
      if (!raw) throw new PeftError('INVALID_FILE', `${paramsFile}: tensor "${n}" is missing (a checkpoint of another model or adapter?)`);
      if (!tf.util.arraysEqual(raw.shape, v.shape)) throw new PeftError('SHAPE_MISMATCH', `${paramsFile}: tensor "${n}" has shape [${raw.shape}] but the model needs [${v.shape}]`);
    }
    for (const [n, v] of targets) {
      const t = rawToTensor(n, file.tensors[n], paramsFile);
      v.assign(t);
      t.dispose();
    }
  }

  /** Restores model, optimizer, scheduler, RNG and data position from a checkpoint folder. */
  async loadCheckpoint(dir: string): Promise<void> {
    const fs = this.fs;
    const need = async (f: string) => {
      const p = joinPath(dir, f);
      if (!(await fs.exists(p))) throw new PeftError('FILE_NOT_FOUND', `checkpoint ${dir}: ${f} is missing (not a checkpoint folder, or one written by something else)`);
      return p;
    };
    // parameters
    await need(this.isPeft() ? CHECKPOINT_FILES.trainableParams : CHECKPOINT_FILES.fullModel);
    await this.loadParameters(dir);
    // optimizer
    const optPath = await need(CHECKPOINT_FILES.optimizer);
    const optFile = parseSafetensors(await readFileChecked(optPath, fs), optPath);
    const optTensors: Record<string, tf.Tensor> = {};
    for (const [n, raw] of Object.entries(optFile.tensors)) optTensors[n] = rawToTensor(n, raw, optPath);
    try {
      const json = JSON.parse(optFile.metadata.optimizer ?? '{}');
      this.createOptimizer().loadState(optTensors, json, optPath);
    } finally {
      tf.dispose(Object.values(optTensors));
    }
    // scheduler, rng, state
    const sched = (await readJson(await need(CHECKPOINT_FILES.scheduler), fs)) as unknown as SchedulerState;
    this.lrScheduler?.loadStateDict({ ...this.lrScheduler.stateDict(), step: sched.step });
    const rng = await readJson(await need(CHECKPOINT_FILES.rng), fs);
    setRngState(Number(rng.peftjs_rng));
    const st = await readJson(await need(CHECKPOINT_FILES.trainerState), fs);
    const extra = (st.peftjs ?? {}) as Record<string, unknown>;
    const pos = (extra.data_position ?? rng.data_position) as TrainerState['dataPosition'] | undefined;
    this.state = {
      ...this.state,
      globalStep: Number(st.global_step),
      epoch: Number(st.epoch),
      bestMetric: (st.best_metric as number | null) ?? null,
      bestModelCheckpoint: (st.best_model_checkpoint as string | null) ?? null,
      bestGlobalStep: (st.best_global_step as number | null) ?? null,
      numInputTokensSeen: Number(st.num_input_tokens_seen ?? 0),
      logHistory: ((st.log_history as Record<string, number>[]) ?? []).map((e) => Object.fromEntries(Object.entries(e).map(([k, v]) => [toCamel(k), v])) as LogEntry),
      dataPosition: pos ?? { epoch: 0, stepInEpoch: 0 },
      patienceCounter: Number(extra.patience_counter ?? 0),
      nonFiniteSteps: Number(extra.non_finite_steps ?? 0),
      loggingWindow: (extra.logging_window as TrainerState['loggingWindow']) ?? { lossSum: 0, count: 0 },
    };
  }

  /**
   * Stops the run after the current step when `signal` aborts or, with args.handleSignals (Node), on the
   * first SIGINT / SIGTERM. The process handlers are removed on that first signal, so a second one gets
   * Node's default action: the process ends at once (checkpoint writes are atomic: nothing is torn).
   */
  private watchInterrupts(signal?: AbortSignal): () => void {
    const stop = (why: string) => {
      if (this.interrupted) return;
      this.interrupted = why;
      this.progress.message(`Trainer: ${why}: stopping after this step and writing a checkpoint`);
    };
    const removers: (() => void)[] = [];
    if (signal) {
      const onAbort = () => stop(abortReason(signal));
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        removers.push(() => signal.removeEventListener('abort', onAbort));
      }
    }
    const proc = (globalThis as { process?: { on?: Function; off?: Function } }).process;
    if (this.args.handleSignals && proc?.on && proc.off) {
      const handlers: [string, () => void][] = ['SIGINT', 'SIGTERM'].map((sig) => [sig, () => {
        removeProcessHandlers();
        stop(sig);
      }]);
      const removeProcessHandlers = () => {
        for (const [s, h] of handlers) proc.off!.call(proc, s, h);
      };
      for (const [s, h] of handlers) proc.on.call(proc, s, h);
      removers.push(removeProcessHandlers);
    }
    return () => {
      for (const r of removers) r();
    };
  }
}

function abortReason(signal: AbortSignal): string {
  const r = signal.reason as unknown;
  if (typeof r === 'string') return r;
  if (r instanceof Error && r.name !== 'AbortError') return r.message || r.name;
  return 'aborted';
}

/**
 * What train() rejects with when it was interrupted (its AbortSignal, or SIGINT / SIGTERM with
 * handleSignals): `checkpoint` is the folder written after the last step (null when no step ran), from
 * which `train({ resumeFromCheckpoint: true })` continues; `exitCode` is the shell's convention for the
 * signal (130 SIGINT, 143 SIGTERM, else 1), for a command-line entry point to exit with.
 */
export class TrainingInterruptedError extends PeftError {
  readonly reason: string;
  readonly checkpoint: string | null;
  readonly globalStep: number;
  readonly exitCode: number;
  constructor(reason: string, checkpoint: string | null, globalStep: number) {
    super('INTERRUPTED', `training interrupted (${reason}) at step ${globalStep}: ${checkpoint ? `checkpoint written to ${checkpoint}; resume with resumeFromCheckpoint: true` : 'no checkpoint written'}`);
    this.name = 'TrainingInterruptedError';
    this.reason = reason;
    this.checkpoint = checkpoint;
    this.globalStep = globalStep;
    this.exitCode = reason === 'SIGINT' ? 130 : reason === 'SIGTERM' ? 143 : 1;
  }
}

function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
