// The umbrella: every package's public API, and every built-in method registered on import.
export * from '@peftjs/core';
export * from '@peftjs/models';
export * from '@peftjs/lora';
export * from '@peftjs/adapters';
export * from '@peftjs/prompt';
export * from '@peftjs/prefix';
export * from '@peftjs/ptuning';
export * from '@peftjs/ia3';
export * from '@peftjs/ln-tuning';
export * from '@peftjs/bitfit';
export * from '@peftjs/diff-pruning';
export * from '@peftjs/quant';
export * from '@peftjs/trainer';
export * from '@peftjs/evaluator';
export { tinyLlamaDir, tinyLlamaUrl, TINY_LLAMA_INFO } from '@peftjs/tiny-llama';
