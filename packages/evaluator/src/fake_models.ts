// Test stand-ins for a causal LM, a classifier and a tokenizer, with known behaviour (no weights).
import * as tf from '@tensorflow/tfjs';
import type { EvalModel, EvalTokenizer } from './model_types';

/** Characters a–z are ids 1–26; 0 is eos and pad. */
export const charTokenizer: EvalTokenizer & { batchCalls: number } = {
  batchCalls: 0,
  padTokenId: 0,
  eosTokenId: 0,
  encode: (text: string) => Array.from(text).filter((c) => c >= 'a' && c <= 'z').map((c) => c.charCodeAt(0) - 96),
  decode: (ids: number[], opts?: { skipSpecialTokens?: boolean }) =>
    ids.filter((i) => !(opts?.skipSpecialTokens && i === 0)).map((i) => (i === 0 ? '</s>' : String.fromCharCode(96 + i))).join(''),
  batchEncode(texts: string[], opts?: { padding?: boolean; paddingSide?: 'left' | 'right' }) {
    this.batchCalls++;
    const ids = texts.map((t) => this.encode(t));
    const T = Math.max(...ids.map((r) => r.length));
    const left = opts?.paddingSide === 'left';
    return {
      inputIds: ids.map((r) => (left ? new Array(T - r.length).fill(0).concat(r) : r.concat(new Array(T - r.length).fill(0)))),
      attentionMask: ids.map((r) => {
        const m = new Array(r.length).fill(1);
        const z = new Array(T - r.length).fill(0);
        return left ? z.concat(m) : m.concat(z);
      }),
    };
  },
};

/**
 * A bigram LM over a vocabulary of 4 (ids 0–3): the logits at a position are log P[token at that
 * position], so next-token probabilities are exactly the rows of P. `virtualTokens` prepends
 * that many extra positions to the logits, as prompt tuning does.
 */
export const BIGRAM_P = [
  [0.25, 0.25, 0.25, 0.25],
  [0.1, 0.2, 0.3, 0.4],
  [0.5, 0.25, 0.125, 0.125],
  [0.7, 0.1, 0.1, 0.1],
];

export function bigramModel(virtualTokens = 0): EvalModel & { calls: number[][][] } {
  const logRows = BIGRAM_P.map((row) => row.map(Math.log));
  const m = {
    calls: [] as number[][][],
    forward({ inputIds }: { inputIds: number[][] }) {
      m.calls.push(inputIds);
      const rows = inputIds.map((seq) => [...new Array(virtualTokens).fill(logRows[0]), ...seq.map((id) => logRows[id] ?? logRows[0])]);
      return { logits: tf.tensor3d(rows as number[][][]) };
    },
  };
  return m;
}

/** An LM whose generate answers each prompt with its real tokens reversed, then eos and padding. */
export function echoModel(): Required<Pick<EvalModel, 'forward' | 'generate'>> & { seeds: (number | undefined)[] } {
  const m = {
    seeds: [] as (number | undefined)[],
    forward({ inputIds }: { inputIds: number[][] }) {
      const T = inputIds[0]?.length ?? 0;
      return { logits: tf.zeros([inputIds.length, T, 27]) };
    },
    async generate(opts: { inputIds: number[][]; attentionMask?: number[][]; maxNewTokens?: number; seed?: number }) {
      m.seeds.push(opts.seed);
      const fresh = opts.inputIds.map((row, b) => row.filter((_, t) => opts.attentionMask![b][t] === 1).reverse().concat([0]).slice(0, opts.maxNewTokens));
      const L = Math.max(...fresh.map((f) => f.length));
      return opts.inputIds.map((row, b) => row.concat(fresh[b], new Array(L - fresh[b].length).fill(0)));
    },
  };
  return m;
}

/** A classifier: class 1 when the text has a 'z' token, else 0; logits [B, 2]. */
export function zClassifier(): EvalModel {
  return {
    forward({ inputIds, attentionMask }: { inputIds: number[][]; attentionMask?: number[][] }) {
      return {
        logits: tf.tensor2d(inputIds.map((row, b) => (row.some((id, t) => id === 26 && attentionMask![b][t] === 1) ? [0, 1] : [1, 0]))),
      };
    },
  };
}
