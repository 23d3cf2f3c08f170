// evaluatePeftModel: runs a (PEFT) model over a test set in batches, scores it with the metrics of
// its task, and returns the metrics with every example's prediction.
import * as tf from '@tensorflow/tfjs';
import { metricError } from './errors';
import { corpusBleu, sentenceBleu, type BleuOptions, type BleuScore } from './bleu';
import { corpusChrf, type ChrfOptions, type ChrfScore } from './chrf';
import { rougeScore, type RougeOptions, type RougeScores } from './rouge';
import { accuracy, exactMatch, precisionRecallF1, type ExactMatchOptions, type Label, type PrecisionRecallF1 } from './classification';
import { perplexityOfSequences, promptMasked, type PerplexityResult } from './perplexity';
import { createProgress, type ProgressOption } from './progress';
import { padIdOf, type EvalModel, type EvalTokenizer } from './model_types';

export type EvalTaskType = 'classification' | 'generation' | 'language-modeling';
export type GenerationMetric = 'bleu' | 'chrf' | 'rouge' | 'exactMatch';

/** One test example. classification: input + label; generation: input + target; language-modeling: text, or input + target. */
export interface EvalExample {
  input?: string;
  /** A class index (for a classifier's logits) or a label string. */
  label?: Label;
  /** The reference output, or several references. */
  target?: string | string[];
  /** A whole text to score (language-modeling). */
  text?: string;
}

export interface GenerationOptions {
  /** New tokens per example (default 64 for generation, 8 for classification by generation). */
  maxNewTokens?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Default: the tokenizer's. */
  eosTokenId?: number | number[];
  /** Seed of the first batch when sampling; batch k uses seed + k. */
  seed?: number;
}

export interface EvaluateOptions extends GenerationOptions {
  taskType: EvalTaskType;
  /** Examples per forward or generate call (default 8). */
  batchSize?: number;
  /** Generation metrics to compute (default all four). */
  metrics?: GenerationMetric[];
  bleu?: BleuOptions;
  chrf?: ChrfOptions;
  rouge?: RougeOptions;
  exactMatch?: ExactMatchOptions;
  /**
   * Classification: class names. With a classifier ([B, C] logits) the prediction is labels[argmax];
   * with a causal LM the generated text is mapped to the first label it equals or starts with
   * (case-insensitive).
   */
  labels?: string[];
  /** Trim whitespace around generated text (default true). */
  trimPredictions?: boolean;
  /** Language-modeling: keep at most this many tokens per example. */
  maxLength?: number;
  /** true: a progress bar on stderr (only on a TTY); false: none; a function gets (done, total). Default: bar on long sets. */
  progress?: ProgressOption;
}

export interface ExamplePrediction {
  index: number;
  input?: string;
  /** Classification: the predicted label; generation: the generated text. */
  prediction?: Label;
  /** Classification: the gold label; generation: the reference(s). */
  reference?: Label | string | string[];
  correct?: boolean;
  /** Generation: sentence BLEU and ROUGE of this example. */
  sentenceBleu?: number;
  rouge?: RougeScores;
  /** Language-modeling: this example's summed NLL, predicted tokens and perplexity. */
  nll?: number;
  tokens?: number;
  perplexity?: number;
}

export interface EvaluateMetrics {
  accuracy?: number;
  precisionRecallF1?: PrecisionRecallF1;
  /** Macro F1, for a one-number summary. */
  f1?: number;
  bleu?: BleuScore;
  chrf?: ChrfScore;
  rouge?: RougeScores;
  exactMatch?: number;
  perplexity?: number;
  /** Language-modeling details (token counts, mean NLL, per-sequence figures). */
  lm?: Omit<PerplexityResult, 'perSequence'>;
}

export interface EvaluateResult {
  taskType: EvalTaskType;
  numExamples: number;
  metrics: EvaluateMetrics;
  predictions: ExamplePrediction[];
  /** Wall time of the whole evaluation. */
  seconds: number;
}

const MIN_BAR_BATCHES = 4;

function checkExamples(testData: unknown, taskType: EvalTaskType): asserts testData is EvalExample[] {
  if (!Array.isArray(testData)) throw metricError('testData: expected an array of examples');
  testData.forEach((ex: EvalExample, i) => {
    if (!ex || typeof ex !== 'object') throw metricError(`testData[${i}]: expected an object`);
    if (taskType === 'classification') {
      if (typeof ex.input !== 'string') throw metricError(`testData[${i}].input: expected a string for classification`);
      if (ex.label === undefined) throw metricError(`testData[${i}].label: missing (classification needs a label)`);
    } else if (taskType === 'generation') {
      if (typeof ex.input !== 'string') throw metricError(`testData[${i}].input: expected a string for generation`);
      const t = ex.target;
      if (typeof t !== 'string' && !(Array.isArray(t) && t.length > 0 && t.every((x) => typeof x === 'string'))) {
        throw metricError(`testData[${i}].target: expected a string or a non-empty array of strings`);
      }
    } else if (typeof ex.text !== 'string' && !(typeof ex.input === 'string' && typeof ex.target === 'string')) {
      throw metricError(`testData[${i}]: language-modeling needs text, or input and target strings`);
    }
  });
}

function batches<T>(xs: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

/** Left-padded batch (what generation needs; classifiers find the last real token from the mask). */
function encodeLeft(tokenizer: EvalTokenizer, texts: string[]): { inputIds: number[][]; attentionMask: number[][] } {
  if (tokenizer.batchEncode) return tokenizer.batchEncode(texts, { padding: true, paddingSide: 'left' });
  const ids = texts.map((t) => tokenizer.encode(t));
  const T = Math.max(0, ...ids.map((r) => r.length));
  const pad = padIdOf(tokenizer);
  return {
    inputIds: ids.map((r) => new Array<number>(T - r.length).fill(pad).concat(r)),
    attentionMask: ids.map((r) => new Array<number>(T - r.length).fill(0).concat(new Array<number>(r.length).fill(1))),
  };
}

async function generateTexts(
  model: EvalModel,
  tokenizer: EvalTokenizer,
  inputs: string[],
  opts: EvaluateOptions,
  defaultMaxNew: number,
  label: string,
): Promise<string[]> {
  if (typeof model.generate !== 'function') throw metricError('model.generate: the model has no generate method (needed for this task)');
  const batchSize = opts.batchSize ?? 8;
  const eos = opts.eosTokenId ?? tokenizer.eosTokenId ?? undefined;
  const eosSet = new Set<number>(Array.isArray(eos) ? eos : eos === undefined || eos === null ? [] : [eos]);
  const trim = opts.trimPredictions ?? true;
  const out: string[] = [];
  const parts = batches(inputs, batchSize);
  const progress = createProgress(label, parts.length, opts.progress, MIN_BAR_BATCHES);
  for (let k = 0; k < parts.length; k++) {
    const { inputIds, attentionMask } = encodeLeft(tokenizer, parts[k]);
    const T = inputIds[0]?.length ?? 0;
    const rows = await model.generate({
      inputIds,
      attentionMask,
      maxNewTokens: opts.maxNewTokens ?? defaultMaxNew,
      doSample: opts.doSample,
      temperature: opts.temperature,
      topK: opts.topK,
      topP: opts.topP,
      eosTokenId: eos ?? undefined,
      padTokenId: padIdOf(tokenizer),
      seed: opts.seed === undefined ? undefined : opts.seed + k,
    });
    for (const row of rows) {
      let fresh = row.slice(T);
      const stop = fresh.findIndex((id) => eosSet.has(id));
      if (stop >= 0) fresh = fresh.slice(0, stop);
      const text = tokenizer.decode(fresh, { skipSpecialTokens: true });
      out.push(trim ? text.trim() : text);
    }
    progress.tick();
  }
  progress.done();
  return out;
}

async function argmaxRows(logits: tf.Tensor): Promise<number[]> {
  const am = tf.tidy(() => tf.argMax(logits, -1));
  try {
    return Array.from(await am.data()); // asynchronous: no stall (and no error) on a GPU backend
  } finally {
    am.dispose();
  }
}

async function classify(model: EvalModel, tokenizer: EvalTokenizer, data: EvalExample[], opts: EvaluateOptions): Promise<{ preds: Label[]; golds: Label[] }> {
  const labels = opts.labels;
  const golds = data.map((ex, i) => {
    // A class index with label names given is compared as its name.
    if (typeof ex.label === 'number' && labels) {
      if (!Number.isInteger(ex.label) || ex.label < 0 || ex.label >= labels.length) throw metricError(`testData[${i}].label: class index ${ex.label} is outside labels (${labels.length} names)`);
      return labels[ex.label];
    }
    return ex.label as Label;
  });
  const inputs = data.map((ex) => ex.input!);
  const batchSize = opts.batchSize ?? 8;
  const parts = batches(inputs, batchSize);
  const preds: Label[] = [];
  if (parts.length === 0) return { preds, golds };

  // A classifier returns [B, C] logits; a causal LM [B, T, V]: then classify by generating.
  const first = encodeLeft(tokenizer, parts[0]);
  const probe = model.forward(first);
  const rank = probe.logits.rank;
  if (rank !== 2) {
    probe.logits.dispose();
    probe.loss?.dispose();
    const texts = await generateTexts(model, tokenizer, inputs, opts, 8, 'classify');
    for (const t of texts) preds.push(labels ? matchLabel(t, labels) : t);
    return { preds, golds };
  }
  const progress = createProgress('classify', parts.length, opts.progress, MIN_BAR_BATCHES);
  for (let k = 0; k < parts.length; k++) {
    const out = k === 0 ? probe : model.forward(encodeLeft(tokenizer, parts[k]));
    try {
      if (out.logits.rank !== 2) throw metricError(`model.forward logits: expected [batch, classes], got [${out.logits.shape.join(', ')}]`);
      const C = out.logits.shape[1]!;
      if (labels && labels.length !== C) throw metricError(`labels: ${labels.length} names for ${C} classes of the model's logits`);
      for (const c of await argmaxRows(out.logits)) preds.push(labels ? labels[c] : c);
    } finally {
      out.logits.dispose();
      out.loss?.dispose();
    }
    progress.tick();
  }
  progress.done();
  return { preds, golds };
}

/** The first label the generated text equals, else the first it starts with (case-insensitive), else the text. */
function matchLabel(text: string, labels: string[]): string {
  const t = text.trim().toLowerCase();
  for (const l of labels) if (t === l.toLowerCase()) return l;
  for (const l of labels) if (t.startsWith(l.toLowerCase())) return l;
  return text;
}

/** Reference streams for sacrebleu-style corpus metrics from per-example targets. */
function referenceStreams(targets: (string | string[])[]): (string | null)[][] {
  const k = Math.max(1, ...targets.map((t) => (Array.isArray(t) ? t.length : 1)));
  const streams: (string | null)[][] = [];
  for (let j = 0; j < k; j++) streams.push(targets.map((t) => (Array.isArray(t) ? (t[j] ?? null) : j === 0 ? t : null)));
  return streams;
}

/**
 * Evaluates a model on a test set: generates (or runs the classifier), scores with the task's
 * metrics, and returns the metrics with each example's prediction.
 *
 * - classification: accuracy, precision/recall/F1 (macro, micro, weighted, per class).
 * - generation: corpus BLEU and chrF (sacrebleu's numbers), ROUGE (rouge-score's), exact match;
 *   per example, sentence BLEU and ROUGE.
 * - language-modeling: HF's token-weighted perplexity (`text`, or `input` + `target` scoring the target only).
 */
export async function evaluatePeftModel(model: EvalModel, tokenizer: EvalTokenizer, testData: EvalExample[], opts: EvaluateOptions): Promise<EvaluateResult> {
  const started = Date.now();
  if (!opts || !['classification', 'generation', 'language-modeling'].includes(opts.taskType)) {
    throw metricError(`taskType: expected 'classification', 'generation' or 'language-modeling', got ${JSON.stringify(opts?.taskType)}`);
  }
  if (!model || typeof model.forward !== 'function') throw metricError('model: expected an object with forward()');
  if (!tokenizer || typeof tokenizer.encode !== 'function' || typeof tokenizer.decode !== 'function') {
    throw metricError('tokenizer: expected an object with encode() and decode()');
  }
  const batchSize = opts.batchSize ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw metricError(`batchSize: expected a positive integer, got ${batchSize}`);
  checkExamples(testData, opts.taskType);
  model.eval?.();
  const metrics: EvaluateMetrics = {};
  const predictions: ExamplePrediction[] = [];

  if (opts.taskType === 'classification') {
    const { preds, golds } = await classify(model, tokenizer, testData, opts);
    metrics.accuracy = accuracy(preds, golds);
    metrics.precisionRecallF1 = precisionRecallF1(preds, golds, opts.labels ? { labels: opts.labels } : {});
    metrics.f1 = metrics.precisionRecallF1.macro.f1;
    testData.forEach((ex, i) => predictions.push({ index: i, input: ex.input, prediction: preds[i], reference: golds[i], correct: preds[i] === golds[i] }));
  } else if (opts.taskType === 'generation') {
    const targets = testData.map((ex) => ex.target as string | string[]);
    const preds = await generateTexts(model, tokenizer, testData.map((ex) => ex.input!), opts, 64, 'generate');
    const want = new Set<GenerationMetric>(opts.metrics ?? ['bleu', 'chrf', 'rouge', 'exactMatch']);
    const streams = referenceStreams(targets);
    if (want.has('bleu')) metrics.bleu = corpusBleu(preds, streams, opts.bleu);
    if (want.has('chrf')) metrics.chrf = corpusChrf(preds, streams, opts.chrf);
    const rouge = want.has('rouge') ? rougeScore(preds, targets, opts.rouge) : undefined;
    if (rouge) metrics.rouge = rouge.mean;
    if (want.has('exactMatch')) {
      // With several references an example matches when any of them does.
      const hits = preds.map((p, i) => {
        const refs = Array.isArray(targets[i]) ? (targets[i] as string[]) : [targets[i] as string];
        return refs.some((r) => exactMatch([p], [r], opts.exactMatch) === 1);
      });
      metrics.exactMatch = preds.length ? hits.filter(Boolean).length / preds.length : 0;
    }
    testData.forEach((ex, i) => {
      const refs = Array.isArray(targets[i]) ? (targets[i] as string[]) : [targets[i] as string];
      predictions.push({
        index: i,
        input: ex.input,
        prediction: preds[i],
        reference: targets[i],
        correct: refs.includes(preds[i]),
        sentenceBleu: want.has('bleu') ? sentenceBleu(preds[i], refs, { tokenize: opts.bleu?.tokenize, lowercase: opts.bleu?.lowercase }).score : undefined,
        rouge: rouge?.perExample[i],
      });
    });
  } else {
    const sequences = testData.map((ex) => (typeof ex.text === 'string' ? { inputIds: tokenizer.encode(ex.text) } : promptMasked(tokenizer, ex.input!, ex.target as string)));
    const r = await perplexityOfSequences(model, sequences, {
      batchSize,
      maxLength: opts.maxLength,
      padTokenId: padIdOf(tokenizer),
      progress: typeof opts.progress === 'function' ? opts.progress : opts.progress ?? (Math.ceil(testData.length / batchSize) >= MIN_BAR_BATCHES ? undefined : false),
    });
    const { perSequence, ...rest } = r;
    metrics.perplexity = r.perplexity;
    metrics.lm = rest;
    testData.forEach((ex, i) => predictions.push({ index: i, input: ex.text ?? ex.input, ...perSequence[i] }));
  }
  return { taskType: opts.taskType, numExamples: testData.length, metrics, predictions, seconds: (Date.now() - started) / 1000 };
}

