import type * as tf from '@tensorflow/tfjs';

/**
 * What the evaluator needs from a model: @peftjs/core's PreTrainedModel and PeftModel satisfy it,
 * and so does any object with the same forward (and generate, for generation).
 */
export interface EvalModel {
  /** logits [B, T, V] for a causal LM (prompt-learning methods may prepend virtual tokens), [B, C] for a classifier. */
  forward(inputs: { inputIds: number[][]; attentionMask?: number[][]; labels?: number[][] }): { logits: tf.Tensor; loss?: tf.Scalar };
  /** Prompt + new ids per row. */
  generate?(opts: {
    inputIds: number[][];
    attentionMask?: number[][];
    maxNewTokens?: number;
    doSample?: boolean;
    temperature?: number;
    topK?: number;
    topP?: number;
    eosTokenId?: number | number[];
    padTokenId?: number;
    seed?: number;
  }): Promise<number[][]>;
  /** Switches dropout off where the model has it (Module.eval()). */
  eval?(): unknown;
}

export interface EvalTokenizer {
  encode(text: string): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  batchEncode?(texts: string[], opts?: { padding?: boolean; paddingSide?: 'left' | 'right' }): { inputIds: number[][]; attentionMask: number[][] };
  padTokenId?: number | null;
  eosTokenId?: number | number[] | null;
}

export function firstId(x: number | number[] | null | undefined): number | undefined {
  if (Array.isArray(x)) return x[0];
  return x ?? undefined;
}

export function padIdOf(tokenizer: EvalTokenizer): number {
  return tokenizer.padTokenId ?? firstId(tokenizer.eosTokenId) ?? 0;
}
