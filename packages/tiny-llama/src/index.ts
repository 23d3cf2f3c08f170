/**
 * peftjs-tiny-llama: the small pretrained LLaMA bundled with peftjs, an HF model folder (config.json,
 * model.safetensors in bf16, tokenizer.json) that `AutoModelForCausalLM.fromPretrained` and
 * `AutoTokenizer.fromPretrained` read. Made by tools/pretrain (see model/training.json).
 */

/** URL of the model folder, for browsers (serve the package's `model/` directory) and Node alike. */
export const tinyLlamaUrl: URL = new URL('../model/', import.meta.url);

/** The model folder as a file-system path (Node). */
export function tinyLlamaDir(): string {
  const u = tinyLlamaUrl;
  if (u.protocol !== 'file:') return u.href;
  return decodeURIComponent(u.pathname).replace(/\/$/, '');
}

/** What the model is, from model/training.json. */
export const TINY_LLAMA_INFO = {
  parameters: 3_950_848,
  layers: 4,
  hiddenSize: 256,
  heads: 4,
  kvHeads: 2,
  vocabSize: 4096,
  corpus: 'State of the Union addresses 1790–2019 and Moby Dick',
} as const;
