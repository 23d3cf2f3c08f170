// Tiny models and data for the trainer's tests (not part of the package's public surface).
import { manualSeed } from '@peftjs/core';
import { LlamaForCausalLM, parseModelConfig, type LlamaConfig } from '@peftjs/models';
import { mulberry32 } from '@peftjs/core';
import type { Example } from '../data';

/** A random LLaMA: hidden 32, 2 layers, 4 heads / 2 kv heads, vocab `vocab` (deterministic from `seed`). */
export function tinyLlama(seed = 1, vocab = 64): LlamaForCausalLM {
  manualSeed(seed);
  const config = parseModelConfig({
    model_type: 'llama',
    vocab_size: vocab,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 128,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: false,
  }) as LlamaConfig;
  return new LlamaForCausalLM(config);
}

/** `n` examples of random ids with lengths in [minLen, maxLen] (deterministic from `seed`). */
export function randomExamples(n: number, seed = 3, vocab = 64, minLen = 5, maxLen = 12): Example[] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const len = minLen + Math.floor(r() * (maxLen - minLen + 1));
    return { inputIds: Array.from({ length: len }, () => 1 + Math.floor(r() * (vocab - 1))) };
  });
}
