// The metrics alone: no tfjs, no @peftjs/core (`@peftjs/evaluator/metrics`), usable in any JS runtime.
export { corpusBleu, sentenceBleu, computeBleu, type BleuOptions, type BleuScore, type SmoothMethod } from './bleu';
export { corpusChrf, sentenceChrf, type ChrfOptions, type ChrfScore } from './chrf';
export {
  rougeScore,
  rougeTokenize,
  type RougeOptions,
  type RougeResult,
  type RougeScores,
  type RougeFigure,
  type RougeType,
} from './rouge';
export { porterStem } from './porter';
export {
  accuracy,
  precisionRecallF1,
  exactMatch,
  type Label,
  type ClassScores,
  type PrecisionRecallF1,
  type PrecisionRecallF1Options,
  type ExactMatchOptions,
} from './classification';
export { tokenize13a, tokenizeIntl, tokenizeChar, tokenizeNone, type BleuTokenizerName } from './tokenizers';
export { SACREBLEU_VERSION } from './sacrebleu_compat';
export { type MetricError, type MetricErrorCode } from './errors';
