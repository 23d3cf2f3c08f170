// @peftjs/evaluator: metrics with the reference tools' numbers, perplexity, and evaluatePeftModel.
// The metrics alone (no tfjs) are also at '@peftjs/evaluator/metrics'.
export * from './metrics';
export { perplexity, perplexityOfSequences, type PerplexityOptions, type PerplexityResult, type LabeledSequence } from './perplexity';
export {
  evaluatePeftModel,
  type EvalExample,
  type EvalTaskType,
  type EvaluateOptions,
  type EvaluateResult,
  type EvaluateMetrics,
  type ExamplePrediction,
  type GenerationOptions,
  type GenerationMetric,
} from './evaluate';
export { type EvalModel, type EvalTokenizer } from './model_types';
export { type Progress, type ProgressOption } from './progress';
