import * as tf from '@tensorflow/tfjs';
import { Tokenizer } from '@huggingface/tokenizers';
import {
  Embedding,
  Module,
  PeftError,
  PEFT_METHOD_SPEC_VERSION,
  checkAllocation,
  forwardWithVirtualTokens,
  MAX_JSON_BYTES,
  parseJsonObject,
  readFileChecked,
  getFileSystem,
  joinPath,
  nextRandom,
  nextSeed,
  preparePromptLearningConfig,
  type FileSystem,
  type PromptLearningMethod,
  type PreTrainedModel,
} from '@peftjs/core';
import { PromptTuningConfig } from './config';

/** HF's PromptEmbedding: `embedding` [numVirtualTokens, tokenDim], the prompt itself. */
export class PromptEmbedding extends Module {
  constructor(weight: tf.Tensor) {
    super();
    const [n, d] = weight.shape as number[];
    this.registerModule('embedding', new Embedding(n, d, weight));
  }
  get embedding(): Embedding {
    return this.child<Embedding>('embedding');
  }
  /** The virtual-token embeddings [nvt, tokenDim] (the weight itself: no gather, so gradients work on every backend). */
  output(): tf.Tensor {
    return this.embedding.weight;
  }
}

const initTokenIds = new Map<string, number[]>();
const cacheKey = (dir: string, text: string) => `${dir}\u0000${text}`;

function tokenize(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown>, text: string, source: string): number[] {
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson, tokenizerConfig);
  } catch (e) {
    throw new PeftError('INVALID_FILE', `${source}: not a tokenizer peftjs can build (${String((e as Error)?.message).slice(0, 120)})`, { cause: e });
  }
  // HF calls tokenizer(init_text): special tokens (BOS …) included
  try {
    return tok.encode(text, { add_special_tokens: true }).ids;
  } catch (e) {
    throw new PeftError('INVALID_FILE', `${source}: encoding promptTuningInitText failed in the tokenizer (${String((e as Error)?.message).slice(0, 120)})`, { cause: e });
  }
}

/**
 * Reads the tokenizer of a TEXT-init config and remembers the text's token ids, so `getPeftModel` can
 * build the prompt anywhere (browsers included). In Node `getPeftModel` reads the folder itself when this
 * was not called.
 */
export async function loadPromptTuningInitText(config: PromptTuningConfig, fs: FileSystem = getFileSystem()): Promise<number[]> {
  const dir = config.tokenizerNameOrPath;
  const text = config.promptTuningInitText;
  if (!dir || text == null) throw new PeftError('INVALID_CONFIG', 'loadPromptTuningInitText: the config needs tokenizerNameOrPath and promptTuningInitText');
  const path = joinPath(dir, 'tokenizer.json');
  if (!(await fs.exists(path))) throw new PeftError('FILE_NOT_FOUND', `PromptTuningConfig.tokenizerNameOrPath: no tokenizer.json in ${dir}`);
  const json = parseJsonObject(await readFileChecked(path, fs, MAX_JSON_BYTES, 'the JSON size limit'), path);
  const cfgPath = joinPath(dir, 'tokenizer_config.json');
  const cfg = (await fs.exists(cfgPath)) ? parseJsonObject(await readFileChecked(cfgPath, fs, MAX_JSON_BYTES, 'the JSON size limit'), cfgPath) : {};
  const ids = tokenize(json, cfg, text, path);
  initTokenIds.set(cacheKey(dir, text), ids);
  return ids;
}

function readTokenIdsSync(dir: string, text: string): number[] {
  const cached = initTokenIds.get(cacheKey(dir, text));
  if (cached) return cached;
  const getBuiltin = (globalThis as { process?: { getBuiltinModule?: (m: string) => any } }).process?.getBuiltinModule;
  const fs = getBuiltin?.('node:fs');
  if (!fs) {
    throw new PeftError('UNSUPPORTED', 'PromptTuningConfig TEXT init: call `await loadPromptTuningInitText(config)` before getPeftModel (reading the tokenizer synchronously needs Node)');
  }
  const path = joinPath(dir, 'tokenizer.json');
  if (!fs.existsSync(path)) throw new PeftError('FILE_NOT_FOUND', `PromptTuningConfig.tokenizerNameOrPath: no tokenizer.json in ${dir}`);
  const cfgPath = joinPath(dir, 'tokenizer_config.json');
  // a regular file of bounded size, parsed with errors that name it (never its text)
  const read = (p: string) => {
    let st: { isFile(): boolean; size: number };
    try {
      st = fs.statSync(p);
    } catch (e) {
      throw new PeftError('FILE_NOT_FOUND', `PromptTuningConfig.tokenizerNameOrPath: cannot read ${p}`, { cause: e });
    }
    if (!st.isFile()) throw new PeftError('INVALID_FILE', `${p}: not a regular file`);
    if (st.size > MAX_JSON_BYTES) throw new PeftError('LIMIT_EXCEEDED', `${p}: ${st.size} bytes exceeds the JSON size limit (${MAX_JSON_BYTES} bytes)`);
    return parseJsonObject(new Uint8Array(fs.readFileSync(p)), p);
  };
  const json = read(path);
  const cfg = fs.existsSync(cfgPath) ? read(cfgPath) : {};
  const ids = tokenize(json, cfg, text, path);
  initTokenIds.set(cacheKey(dir, text), ids);
  return ids;
}

/** HF's TEXT init: the text's ids repeated ⌈n / len⌉ times, then cut to n. */
export function textInitIds(ids: number[], n: number): number[] {
  if (!ids.length) throw new PeftError('INVALID_CONFIG', 'PromptTuningConfig: promptTuningInitText has no tokens');
  const reps = Math.ceil(n / ids.length);
  return Array.from({ length: reps }, () => ids).flat().slice(0, n);
}

/** Prompts longer than this are refused (checked before anything is allocated). */
export const MAX_VIRTUAL_TOKENS = 1 << 16;

function initialPrompt(model: PreTrainedModel, config: PromptTuningConfig): tf.Tensor {
  const n = config.numVirtualTokens * (config.numTransformerSubmodules ?? 1);
  const d = config.tokenDim!;
  if (!Number.isInteger(n) || n < 1 || n > MAX_VIRTUAL_TOKENS) {
    throw new PeftError('LIMIT_EXCEEDED', `PromptTuningConfig: num_virtual_tokens × num_transformer_submodules = ${n} must be from 1 to ${MAX_VIRTUAL_TOKENS}`);
  }
  checkAllocation([n, d], `PromptTuningConfig: the prompt [num_virtual_tokens ${n}, token_dim ${d}]`);
  const words = model.getInputEmbeddings();
  const rows = (ids: number[]) => {
    const bad = ids.find((i) => i < 0 || i >= words.numEmbeddings);
    if (bad !== undefined) throw new PeftError('INVALID_CONFIG', `PromptTuningConfig: token id ${bad} of the init text is outside the model's vocabulary (${words.numEmbeddings}); a tokenizer for another model?`);
    return tf.tidy(() => tf.gather(words.weight, tf.tensor1d(ids, 'int32')).toFloat());
  };
  // HF skips the init in inference mode: the weights come from the file
  if (config.inferenceMode || config.promptTuningInit === 'RANDOM') return tf.randomNormal([n, d], 0, 1, 'float32', nextSeed());
  if (config.promptTuningInit === 'SAMPLE_VOCAB') {
    return rows(Array.from({ length: n }, () => Math.floor(nextRandom() * words.numEmbeddings)));
  }
  return rows(textInitIds(readTokenIdsSync(config.tokenizerNameOrPath!, config.promptTuningInitText!), n));
}

export const promptTuningMethod: PromptLearningMethod<PromptTuningConfig, PromptEmbedding> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'PROMPT_TUNING',
  prefix: 'prompt_tuning_',
  kind: 'prompt-learning',
  configClass: PromptTuningConfig,
  cannotMergeReason: 'prompt tuning prepends learned virtual-token embeddings to the input; there is no weight to merge them into (keep the adapter, or use LoRA/IA3 to merge)',

  prepareConfig(config, model) {
    return preparePromptLearningConfig(config, model);
  },

  createEncoder(model, config) {
    if (config.tokenDim !== model.config.hiddenSize) {
      throw new PeftError('INVALID_CONFIG', `PromptTuningConfig: token_dim ${config.tokenDim} is not the model's hidden size ${model.config.hiddenSize}`);
    }
    const w = initialPrompt(model, config);
    const enc = new PromptEmbedding(w);
    w.dispose();
    return enc;
  },
  saveTensors(encoder) {
    return { prompt_embeddings: encoder.output().clone() };
  },
  loadTensors(encoder, tensors, _config, source) {
    const t = tensors.prompt_embeddings;
    if (!t) throw new PeftError('INVALID_FILE', `${source}: no "prompt_embeddings" tensor (a prompt-tuning adapter saves one)`);
    const w = encoder.embedding.weight;
    if (!tf.util.arraysEqual(t.shape, w.shape)) {
      throw new PeftError('SHAPE_MISMATCH', `${source}: tensor "prompt_embeddings" has shape [${t.shape}] but this model needs [${w.shape}] (num_virtual_tokens × token_dim)`);
    }
    tf.tidy(() => w.assign(t.toFloat()));
  },
  forward({ model, encoder, config, inputs }) {
    return forwardWithVirtualTokens(model, inputs, config.numVirtualTokens, () => encoder.output());
  },
};
