// Perplexity as HF computes it for a causal LM: labels shifted by one (position t predicts token t+1),
// -100 ignored, and exp of the token-weighted mean negative log-likelihood over the whole dataset:
// exp(Σ NLL / number of predicted tokens).
import * as tf from '@tensorflow/tfjs';
import { metricError } from './errors';
import { createProgress, type ProgressOption } from './progress';
import { padIdOf, type EvalModel, type EvalTokenizer } from './model_types';

/** One sequence: its token ids and, optionally, labels (same length; -100 excludes a token from the loss). */
export interface LabeledSequence {
  inputIds: number[];
  labels?: number[];
}

export interface PerplexityOptions {
  /** Sequences per forward (default 8). */
  batchSize?: number;
  /** Keep at most this many tokens of each sequence (its first ones). */
  maxLength?: number;
  /** Id that pads a batch (default the tokenizer's pad, else eos, else 0); padding never counts. */
  padTokenId?: number;
  progress?: ProgressOption;
}

export interface PerplexityResult {
  /** exp(nllSum / tokenCount): HF's token-weighted perplexity of the dataset. */
  perplexity: number;
  /** nllSum / tokenCount, in nats. */
  meanNll: number;
  nllSum: number;
  /** Predicted tokens: labels other than -100 after the shift. */
  tokenCount: number;
  /** Per sequence: its own NLL sum, predicted tokens and perplexity (NaN with no predicted token). */
  perSequence: { nll: number; tokens: number; perplexity: number }[];
  /** Mean of the per-sequence perplexities (what `evaluate`'s perplexity metric reports as mean_perplexity). */
  meanSequencePerplexity: number;
}

function checkIds(xs: unknown, what: string): asserts xs is number[] {
  if (!Array.isArray(xs)) throw metricError(`${what}: expected an array of token ids`);
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isInteger(xs[i])) throw metricError(`${what}[${i}]: expected an integer token id, got ${xs[i]}`);
  }
}

/**
 * Summed NLL of each row's labels under the model: logits at t score label t+1. Rows are right-padded
 * to the batch's length; the logits may carry extra leading positions (virtual tokens), which are dropped.
 */
async function batchNll(model: EvalModel, ids: number[][], labels: number[][], padId: number): Promise<{ nll: number; tokens: number }[]> {
  const B = ids.length;
  const T = Math.max(...ids.map((r) => r.length));
  const inputIds = ids.map((r) => r.concat(new Array<number>(T - r.length).fill(padId)));
  const attentionMask = ids.map((r) => new Array<number>(r.length).fill(1).concat(new Array<number>(T - r.length).fill(0)));
  const out = model.forward({ inputIds, attentionMask });
  const logits = out.logits;
  try {
    if (logits.rank !== 3 || logits.shape[0] !== B || logits.shape[1]! < T) {
      throw metricError(`model.forward logits: expected [${B}, ≥${T}, vocab], got [${logits.shape.join(', ')}]`);
    }
    const V = logits.shape[2]!;
    if (T < 2) return ids.map(() => ({ nll: 0, tokens: 0 }));
    const offset = logits.shape[1]! - T;
    const targets = new Int32Array(B * (T - 1));
    const keep = new Uint8Array(B * (T - 1));
    for (let b = 0; b < B; b++) {
      const lab = labels[b];
      for (let t = 1; t < T; t++) {
        const y = t < lab.length ? lab[t] : -100;
        if (y !== -100) {
          if (!(y >= 0 && y < V)) throw metricError(`labels[${b}][${t}]: token id ${y} is outside the vocabulary of ${V}`);
          targets[b * (T - 1) + t - 1] = b * (T - 1) * V + (t - 1) * V + y;
          keep[b * (T - 1) + t - 1] = 1;
        } else {
          targets[b * (T - 1) + t - 1] = b * (T - 1) * V + (t - 1) * V;
        }
      }
    }
    const picked = tf.tidy(() => {
      const x = logits.slice([0, offset, 0], [B, T - 1, V]).toFloat();
      const logp = tf.logSoftmax(x, -1).reshape([-1]);
      return tf.gather(logp, tf.tensor1d(targets, 'int32'));
    });
    const lp = await picked.data();
    picked.dispose();
    const res: { nll: number; tokens: number }[] = [];
    for (let b = 0; b < B; b++) {
      let nll = 0;
      let tokens = 0;
      for (let t = 0; t < T - 1; t++) {
        const k = b * (T - 1) + t;
        if (keep[k]) {
          nll -= lp[k];
          tokens++;
        }
      }
      res.push({ nll, tokens });
    }
    return res;
  } finally {
    logits.dispose();
    out.loss?.dispose();
  }
}

/** Perplexity of a model on token sequences (labels default to the inputs; -100 excludes a token). */
export async function perplexityOfSequences(model: EvalModel, sequences: LabeledSequence[], opts: PerplexityOptions & { padTokenId: number }): Promise<PerplexityResult> {
  if (!Array.isArray(sequences)) throw metricError('sequences: expected an array');
  const batchSize = opts.batchSize ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw metricError(`batchSize: expected a positive integer, got ${batchSize}`);
  const maxLength = opts.maxLength;
  if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 1)) throw metricError(`maxLength: expected a positive integer, got ${maxLength}`);
  const seqs = sequences.map((s, i) => {
    checkIds(s?.inputIds, `sequences[${i}].inputIds`);
    const labels = s.labels ?? s.inputIds;
    checkIds(labels, `sequences[${i}].labels`);
    if (labels.length !== s.inputIds.length) {
      throw metricError(`sequences[${i}].labels: has ${labels.length} entries for ${s.inputIds.length} input ids`);
    }
    const n = maxLength === undefined ? s.inputIds.length : Math.min(maxLength, s.inputIds.length);
    return { ids: s.inputIds.slice(0, n), labels: labels.slice(0, n) };
  });
  // Longest first, so that batches hold sequences of similar length (less padding).
  const order = seqs.map((_, i) => i).sort((a, b) => seqs[b].ids.length - seqs[a].ids.length);
  const per: { nll: number; tokens: number }[] = new Array(seqs.length);
  const progress = createProgress('perplexity', Math.ceil(seqs.length / batchSize), opts.progress);
  for (let start = 0; start < order.length; start += batchSize) {
    const idx = order.slice(start, start + batchSize).filter((i) => seqs[i].ids.length > 0);
    for (const i of order.slice(start, start + batchSize)) per[i] = { nll: 0, tokens: 0 };
    if (idx.length > 0) {
      const r = await batchNll(model, idx.map((i) => seqs[i].ids), idx.map((i) => seqs[i].labels), opts.padTokenId);
      idx.forEach((i, k) => (per[i] = r[k]));
    }
    progress.tick();
  }
  progress.done();
  let nllSum = 0;
  let tokenCount = 0;
  for (const p of per) {
    nllSum += p.nll;
    tokenCount += p.tokens;
  }
  const perSequence = per.map((p) => ({ ...p, perplexity: p.tokens > 0 ? Math.exp(p.nll / p.tokens) : NaN }));
  const finite = perSequence.filter((p) => p.tokens > 0);
  const meanNll = tokenCount > 0 ? nllSum / tokenCount : NaN;
  return {
    perplexity: Math.exp(meanNll),
    meanNll,
    nllSum,
    tokenCount,
    perSequence,
    meanSequencePerplexity: finite.length ? finite.reduce((s, p) => s + p.perplexity, 0) / finite.length : NaN,
  };
}

/**
 * Perplexity of a causal LM on texts, token-weighted over the whole dataset as HF computes it.
 * A `{ prompt, text }` entry scores only the tokens after the prompt's (the prompt is the
 * conditioning, as in supervised fine-tuning with prompt labels set to -100).
 */
export async function perplexity(
  model: EvalModel,
  tokenizer: EvalTokenizer,
  texts: (string | { prompt?: string; text: string })[],
  opts: PerplexityOptions = {},
): Promise<PerplexityResult> {
  if (!Array.isArray(texts)) throw metricError('texts: expected an array of strings or { prompt, text } objects');
  const sequences = texts.map((t, i): LabeledSequence => {
    if (typeof t === 'string') return { inputIds: tokenizer.encode(t) };
    if (!t || typeof t.text !== 'string') throw metricError(`texts[${i}]: expected a string or { prompt?: string, text: string }`);
    return promptMasked(tokenizer, t.prompt ?? '', t.text);
  });
  return perplexityOfSequences(model, sequences, { ...opts, padTokenId: opts.padTokenId ?? padIdOf(tokenizer) });
}

/** ids of prompt + text with the prompt's tokens labelled -100 (the prompt's length from encoding it alone). */
export function promptMasked(tokenizer: EvalTokenizer, prompt: string, text: string): LabeledSequence {
  const ids = tokenizer.encode(prompt + text);
  if (!prompt) return { inputIds: ids };
  const p = Math.min(tokenizer.encode(prompt).length, ids.length);
  const labels = ids.slice();
  for (let t = 0; t < p; t++) labels[t] = -100;
  return { inputIds: ids, labels };
}
