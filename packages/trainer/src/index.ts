export {
  resolveTrainingArguments,
  DEFAULT_TRAINING_ARGUMENTS,
  TRAINING_TIPS,
  bestMetricKey,
  greaterIsBetter,
  type TrainingArguments,
  type TrainingArgumentsInput,
  type OptimizerName,
  type SchedulerType,
  type IntervalStrategy,
} from './args';
export { AdamW, SGD, clipGradNorm, type Optimizer, type AdamWOptions, type SgdOptions, type NamedParams } from './optimizer';
export { LrScheduler, lrLambda, resolveWarmupSteps, type SchedulerState } from './schedule';
export {
  dataCollatorWithPadding,
  countLabelTokens,
  epochOrder,
  tokenizeRecords,
  packExamples,
  parseRecords,
  parseCsv,
  loadTextDataset,
  chatMlTemplate,
  IGNORE_INDEX,
  type Example,
  type Batch,
  type DataCollator,
  type CollatorOptions,
  type TokenizerLike,
  type TokenizeOptions,
  type LoadDatasetOptions,
  type TextRecord,
  type ChatMessage,
} from './data';
export {
  Trainer,
  CHECKPOINT_FILES,
  METRICS_LOG,
  type TrainerOptions,
  type TrainerState,
  type TrainerControl,
  type TrainerCallback,
  type LogEntry,
  type EvalPrediction,
  type TrainOutput,
} from './trainer';
export { createTrainProgress, type ProgressSink } from './progress';
