import { PeftError } from '@peftjs/core';

export type OptimizerName = 'adamw' | 'sgd';
export type SchedulerType = 'constant' | 'linear' | 'cosine' | 'constant_with_warmup' | 'cosine_with_restarts';
export type IntervalStrategy = 'no' | 'steps' | 'epoch';

/**
 * HF's TrainingArguments in camelCase. Defaults follow the PEFT training tips (learning rate 2e-4, a
 * small weight decay of 0.01, gradient accumulation when memory is short) where HF's own default is a
 * full fine-tuning one; everything else is HF's default. `TRAINING_TIPS` lists the tips.
 */
export interface TrainingArguments {
  /**
   * Where checkpoints (`checkpoint-<step>/`), `metrics.jsonl` and the final model go. Created (on the
   * Trainer's `fs`) only when something is written there: with saveStrategy 'no' and metricsLog false
   * training touches no file system at all.
   */
  outputDir: string;
  /** Peak learning rate. Default 2e-4 (LoRA's usual start; 1e-3 for prompt tuning, ~2e-5 for full fine-tuning). */
  learningRate: number;
  /** Decoupled weight decay (AdamW) / L2 (SGD). Default 0.01. */
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  /** 'adamw' is torch.optim.AdamW (decoupled decay); 'sgd' is torch.optim.SGD (with `sgdMomentum`). */
  optim: OptimizerName;
  sgdMomentum: number;
  lrSchedulerType: SchedulerType;
  /** Warmup optimizer steps; when 0, ceil(warmupRatio · total steps). */
  warmupSteps: number;
  warmupRatio: number;
  numTrainEpochs: number;
  /** When > 0, the number of optimizer steps (overrides numTrainEpochs). */
  maxSteps: number;
  perDeviceTrainBatchSize: number;
  perDeviceEvalBatchSize: number;
  /** Micro-batches summed into one optimizer step (loss normalized by the label tokens of all of them, as HF 5). */
  gradientAccumulationSteps: number;
  /**
   * HF's gradient_checkpointing: each decoder layer keeps only its input in the forward pass and
   * recomputes its activations in backward (less memory, about one more forward per step). The Trainer
   * calls the model's gradientCheckpointingEnable() at the start of train().
   */
  gradientCheckpointing: boolean;
  /** Global L2 norm to clip gradients to (torch.nn.utils.clip_grad_norm_); 0 or Infinity: no clipping. Default 1.0 as HF. */
  maxGradNorm: number;
  /** Log (logHistory, metrics.jsonl, progress) every this many optimizer steps. */
  loggingSteps: number;
  /** Also log the first step (HF's logging_first_step). */
  loggingFirstStep: boolean;
  evalStrategy: IntervalStrategy;
  /** Evaluate every this many steps with evalStrategy 'steps' (default loggingSteps). */
  evalSteps?: number;
  saveStrategy: IntervalStrategy;
  /** Write a checkpoint every this many steps with saveStrategy 'steps'. */
  saveSteps: number;
  /** Keep at most this many checkpoints (the best one is never pruned); null: keep all. */
  saveTotalLimit: number | null;
  loadBestModelAtEnd: boolean;
  /** An eval metric name (`eval_` prefix optional); default 'loss'. */
  metricForBestModel: string;
  /** Default: false for a loss, true for anything else (accuracy, bleu …). */
  greaterIsBetter?: boolean;
  /** Stop after this many evaluations without improvement of metricForBestModel; 0: never. */
  earlyStoppingPatience: number;
  earlyStoppingThreshold: number;
  seed: number;
  /** Shuffle the training set each epoch (seeded by seed + epoch). false: batches in the given order. */
  shuffle: boolean;
  /** Drop the last incomplete batch of an epoch. */
  dataloaderDropLast: boolean;
  /** true: the latest checkpoint in outputDir; a string: that checkpoint folder. */
  resumeFromCheckpoint: boolean | string | null;
  /** Consecutive non-finite losses tolerated (each skipped with a warning) before training stops with an error. */
  maxNonFiniteSteps: number;
  /**
   * Node: on the first SIGINT / SIGTERM, finish the step, write a checkpoint and make train() reject with a
   * TrainingInterruptedError (exitCode 130 / 143); a second signal ends the process at once (Node's default).
   * Off by default: a library does not take over its host's signals; an entry point (the `peft` CLI) turns it
   * on. `train({ signal })` takes an AbortSignal the caller owns instead.
   */
  handleSignals: boolean;
  /** Terminal progress bar: 'auto' shows it only when stderr is a TTY. */
  progressBar: boolean | 'auto';
  /** Append each log entry to `<outputDir>/metrics.jsonl`. */
  metricsLog: boolean;
}

export type TrainingArgumentsInput = Partial<TrainingArguments> & { outputDir: string };

/** The PEFT training tips the defaults come from, for users to find. */
export const TRAINING_TIPS = {
  learningRate: { peftGeneral: '1e-4 to 3e-4 (higher than full fine-tuning)', lora: 2e-4, promptTuning: 1e-3, fullFineTuning: 2e-5 },
  batchSize: 'use gradientAccumulationSteps when memory is short, e.g. perDeviceTrainBatchSize 1 × gradientAccumulationSteps 16',
  epochs: { smallDataset: '5-10', largeDataset: '1-3' },
  regularization: { dropout: 'use dropout in the PEFT layers (e.g. loraDropout 0.05)', weightDecay: 0.01 },
} as const;

export const DEFAULT_TRAINING_ARGUMENTS: Omit<TrainingArguments, 'outputDir'> = {
  learningRate: TRAINING_TIPS.learningRate.lora,
  weightDecay: TRAINING_TIPS.regularization.weightDecay,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  optim: 'adamw',
  sgdMomentum: 0,
  lrSchedulerType: 'linear',
  warmupSteps: 0,
  warmupRatio: 0,
  numTrainEpochs: 3,
  maxSteps: -1,
  perDeviceTrainBatchSize: 8,
  perDeviceEvalBatchSize: 8,
  gradientAccumulationSteps: 1,
  gradientCheckpointing: false,
  maxGradNorm: 1.0,
  loggingSteps: 10,
  loggingFirstStep: false,
  evalStrategy: 'no',
  saveStrategy: 'steps',
  saveSteps: 500,
  saveTotalLimit: null,
  loadBestModelAtEnd: false,
  metricForBestModel: 'loss',
  earlyStoppingPatience: 0,
  earlyStoppingThreshold: 0,
  seed: 42,
  shuffle: true,
  dataloaderDropLast: false,
  resumeFromCheckpoint: null,
  maxNonFiniteSteps: 5,
  handleSignals: false,
  progressBar: 'auto',
  metricsLog: true,
};

const ENUMS: Partial<Record<keyof TrainingArguments, readonly string[]>> = {
  optim: ['adamw', 'sgd'],
  lrSchedulerType: ['constant', 'linear', 'cosine', 'constant_with_warmup', 'cosine_with_restarts'],
  evalStrategy: ['no', 'steps', 'epoch'],
  saveStrategy: ['no', 'steps', 'epoch'],
};

/** Fills defaults and validates every field; an unknown or ill-typed field is an error naming it. */
export function resolveTrainingArguments(input: TrainingArgumentsInput): TrainingArguments {
  if (!input || typeof input !== 'object') throw new PeftError('INVALID_CONFIG', 'TrainingArguments: expected an object');
  const known = new Set<string>(['outputDir', 'evalSteps', 'greaterIsBetter', ...Object.keys(DEFAULT_TRAINING_ARGUMENTS)]);
  for (const k of Object.keys(input)) {
    if (!known.has(k)) throw new PeftError('INVALID_CONFIG', `TrainingArguments: unknown field "${k}"`);
  }
  const out = { ...DEFAULT_TRAINING_ARGUMENTS, ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) } as TrainingArguments;
  const bad = (k: string, what: string, v: unknown): never => {
    throw new PeftError('INVALID_CONFIG', `TrainingArguments: field "${k}" must be ${what} (got ${JSON.stringify(v)})`);
  };
  if (typeof out.outputDir !== 'string' || !out.outputDir) bad('outputDir', 'a non-empty string', out.outputDir);
  for (const [k, v] of Object.entries(out)) {
    const def = (DEFAULT_TRAINING_ARGUMENTS as Record<string, unknown>)[k];
    if (ENUMS[k as keyof TrainingArguments]) {
      if (!ENUMS[k as keyof TrainingArguments]!.includes(v as string)) bad(k, `one of ${ENUMS[k as keyof TrainingArguments]!.map((s) => `'${s}'`).join(', ')}`, v);
    } else if (typeof def === 'number' && (typeof v !== 'number' || Number.isNaN(v))) bad(k, 'a number', v);
    else if (typeof def === 'boolean' && typeof v !== 'boolean') bad(k, 'a boolean', v);
  }
  const positiveInt = ['perDeviceTrainBatchSize', 'perDeviceEvalBatchSize', 'gradientAccumulationSteps', 'loggingSteps', 'saveSteps', 'maxNonFiniteSteps'] as const;
  for (const k of positiveInt) if (!Number.isInteger(out[k]) || out[k] < 1) bad(k, 'a positive integer', out[k]);
  if (out.evalSteps !== undefined && (!Number.isInteger(out.evalSteps) || out.evalSteps < 1)) bad('evalSteps', 'a positive integer', out.evalSteps);
  if (!Number.isInteger(out.maxSteps)) bad('maxSteps', 'an integer (≤ 0: use numTrainEpochs)', out.maxSteps);
  if (!(out.learningRate >= 0)) bad('learningRate', 'a number ≥ 0', out.learningRate);
  if (!(out.weightDecay >= 0)) bad('weightDecay', 'a number ≥ 0', out.weightDecay);
  if (!(out.adamBeta1 >= 0 && out.adamBeta1 < 1)) bad('adamBeta1', 'in [0, 1)', out.adamBeta1);
  if (!(out.adamBeta2 >= 0 && out.adamBeta2 < 1)) bad('adamBeta2', 'in [0, 1)', out.adamBeta2);
  if (!(out.adamEpsilon >= 0)) bad('adamEpsilon', 'a number ≥ 0', out.adamEpsilon);
  if (!(out.warmupRatio >= 0 && out.warmupRatio <= 1)) bad('warmupRatio', 'in [0, 1]', out.warmupRatio);
  if (!Number.isInteger(out.warmupSteps) || out.warmupSteps < 0) bad('warmupSteps', 'an integer ≥ 0', out.warmupSteps);
  if (!(out.numTrainEpochs > 0)) bad('numTrainEpochs', 'a number > 0', out.numTrainEpochs);
  if (!(out.maxGradNorm >= 0)) bad('maxGradNorm', 'a number ≥ 0 (0: no clipping)', out.maxGradNorm);
  if (!Number.isInteger(out.earlyStoppingPatience) || out.earlyStoppingPatience < 0) bad('earlyStoppingPatience', 'an integer ≥ 0', out.earlyStoppingPatience);
  if (out.saveTotalLimit !== null && (!Number.isInteger(out.saveTotalLimit) || out.saveTotalLimit < 1)) bad('saveTotalLimit', 'a positive integer or null', out.saveTotalLimit);
  if (typeof out.metricForBestModel !== 'string') bad('metricForBestModel', 'a string', out.metricForBestModel);
  if (out.greaterIsBetter !== undefined && typeof out.greaterIsBetter !== 'boolean') bad('greaterIsBetter', 'a boolean', out.greaterIsBetter);
  const r = out.resumeFromCheckpoint;
  if (r !== null && typeof r !== 'boolean' && typeof r !== 'string') bad('resumeFromCheckpoint', 'a boolean, a checkpoint folder or null', r);
  if (out.progressBar !== 'auto' && typeof out.progressBar !== 'boolean') bad('progressBar', "true, false or 'auto'", out.progressBar);
  if ((out.loadBestModelAtEnd || out.earlyStoppingPatience > 0) && out.evalStrategy === 'no') {
    bad('evalStrategy', `'steps' or 'epoch' when ${out.loadBestModelAtEnd ? 'loadBestModelAtEnd' : 'earlyStoppingPatience'} is set`, out.evalStrategy);
  }
  if (out.loadBestModelAtEnd && out.saveStrategy !== 'no' && out.evalStrategy !== out.saveStrategy) {
    bad('saveStrategy', `the same as evalStrategy ('${out.evalStrategy}') with loadBestModelAtEnd, as HF requires`, out.saveStrategy);
  }
  return out;
}

/** The metric key as logged (`eval_loss` …). */
export function bestMetricKey(args: TrainingArguments): string {
  return args.metricForBestModel.startsWith('eval_') ? args.metricForBestModel : `eval_${args.metricForBestModel}`;
}

export function greaterIsBetter(args: TrainingArguments): boolean {
  if (args.greaterIsBetter !== undefined) return args.greaterIsBetter;
  return !/(^|_)loss$/.test(args.metricForBestModel);
}
