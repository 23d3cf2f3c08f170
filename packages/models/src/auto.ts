import * as tf from '@tensorflow/tfjs';
import { DEFAULT_MAX_LOAD_BYTES, PeftError, joinPath, loadModelWeights, readJson, resolvePretrained, type FileSystem, type HubOptions } from '@peftjs/core';
import { ParamSource } from './common';
import { parseClassificationFields, parseModelConfig, type AnyModelConfig, type ClassificationFields } from './config';
import { GPT2ForSequenceClassification, GPT2LMHeadModel } from './gpt2';
import type { CausalLMBase, GenerationDefaults, SeqClsBase } from './heads';
import { LlamaForCausalLM, LlamaForSequenceClassification } from './llama';

/**
 * `dir` is a folder, a URL (read with fetch, in Node too) or a hub id `org/name`, read from the HF hub cache
 * (`revision`, `cacheDir`, `localFilesOnly`, `token`: see HubOptions) and downloaded into it when online.
 */
export interface FromPretrainedOptions extends HubOptions {
  /** Where files are read from; Node's fs (or fetch in a browser) by default. */
  fs?: FileSystem;
  /**
   * What the load may allocate, in bytes: the weight files read and the model's parameters as
   * config.json sizes them (16 GiB by default). Above it the load fails (LIMIT_EXCEEDED) before allocating.
   */
  maxBytes?: number;
  /**
   * Loads the model quantised (e.g. 4-bit: `new BitsAndBytesConfig({ loadIn4bit: true })` from
   * @peftjs/quant, which implements this hook). See QuantizationHook.
   */
  quantizationConfig?: QuantizationHook;
}

// --- quantizationConfig hook (@peftjs/quant implements it; models does not depend on it) ---------
/** What fromPretrained hands a quantizationConfig: the folder, its parsed config and the model builder. */
export interface QuantizedLoad {
  dir: string;
  fs: FileSystem;
  cfg: AnyModelConfig;
  build: (src: ParamSource) => CausalLMBase;
  maxBytes: number;
}
/** A quantisation config that loads the model itself (reading the weights layer by layer). */
export interface QuantizationHook {
  loadCausalLM(args: QuantizedLoad): Promise<CausalLMBase>;
}
// -----------------------------------------------------------------------------------------------------

/**
 * The parameter count config.json implies (an upper estimate), to refuse a model that cannot fit the
 * byte budget before anything of that size is allocated.
 */
export function estimateParameters(cfg: AnyModelConfig): number {
  const h = cfg.hiddenSize;
  const l = cfg.numHiddenLayers;
  const v = cfg.vocabSize;
  const head = cfg.tieWordEmbeddings ? 0 : v * h;
  if (cfg.modelType === 'gpt2') return v * h + cfg.nPositions * h + head + l * (4 * h * h + 2 * h * cfg.nInner + 9 * h + cfg.nInner) + 2 * h;
  const q = cfg.numAttentionHeads * cfg.headDim;
  const kv = cfg.numKeyValueHeads * cfg.headDim;
  const layer = h * q + 2 * h * kv + q * h + 3 * h * cfg.intermediateSize + q + 2 * kv + h + 2 * cfg.intermediateSize + 2 * h;
  return v * h + head + l * layer + h;
}

function checkBudget(cfg: AnyModelConfig, source: string, maxBytes: number, extra = 0): void {
  if (!(maxBytes > 0)) throw new PeftError('INVALID_ARGUMENT', `maxBytes must be a positive number of bytes (got ${maxBytes})`);
  const bytes = 4 * estimateParameters(cfg) + extra;
  if (!(bytes <= maxBytes)) {
    throw new PeftError(
      'LIMIT_EXCEEDED',
      `${source}: a ${cfg.modelType} model of hidden_size ${cfg.hiddenSize}, num_hidden_layers ${cfg.numHiddenLayers} and vocab_size ${cfg.vocabSize} needs about ${(bytes / 2 ** 30).toFixed(1)} GiB, above maxBytes (${(maxBytes / 2 ** 30).toFixed(1)} GiB); raise maxBytes if this is intended`,
    );
  }
}

/**
 * A ParamSource that builds the model from the checkpoint's tensors: a parameter the files have at
 * another shape is an error at once, and parameters the files lack are randomly initialized (and
 * then reported by name by loadStateDict) only up to the size of the checkpoint itself, so a
 * config.json that claims a far larger model fails before a tensor of the claimed size is allocated.
 */
class CheckpointSource extends ParamSource {
  private readonly budget: { left: number };
  constructor(
    private readonly tensors: Record<string, tf.Tensor>,
    private readonly where: { source: string; modelType: string; allowMissing: string[] },
    private readonly path = '',
    root?: ParamSource,
    budget?: { left: number },
  ) {
    super(tensors, path, root);
    this.budget = budget ?? { left: Math.max(64 * 2 ** 20, 4 * Object.values(tensors).reduce((a, t) => a + t.size, 0)) };
  }
  override scope(name: string): ParamSource {
    return new CheckpointSource(this.tensors, this.where, this.path ? `${this.path}.${name}` : name, (this as any).root ?? this, this.budget);
  }
  override get(name: string, shape: number[], init: () => tf.Tensor): tf.Tensor {
    const key = this.path ? `${this.path}.${name}` : name;
    const t = Object.hasOwn(this.tensors, key) ? this.tensors[key] : undefined;
    if (!t) {
      const bytes = 4 * shape.reduce((a, b) => a * b, 1);
      if (!this.where.allowMissing.includes(key) && (this.budget.left -= bytes) < 0) {
        throw new PeftError(
          'INVALID_FILE',
          `${this.where.source}: does not match a ${this.where.modelType} model built from config.json: missing tensors ${key} … (config.json describes a model far larger than these weights)`,
        );
      }
    } else if (!tf.util.arraysEqual(t.shape, shape)) {
      throw new PeftError('SHAPE_MISMATCH', `${this.where.source}: tensor "${key}" has shape [${t.shape}] but the model expects [${shape}] (config.json and the weights disagree)`);
    }
    return super.get(name, shape, init);
  }
}

export interface SeqClsFromPretrainedOptions extends FromPretrainedOptions {
  /** Overrides config.json's num_labels (e.g. when starting from a causal LM checkpoint). */
  numLabels?: number;
  problemType?: ClassificationFields['problemType'];
  /** Called with a message when `score` is newly initialized (default: console.warn). */
  onWarning?: (message: string) => void;
}

type Classification = ClassificationFields & { problemTypeExplicit: boolean };

async function readConfig(dir: string, fs: FileSystem): Promise<{ raw: Record<string, unknown>; path: string }> {
  const path = joinPath(dir, 'config.json');
  if (!(await fs.exists(path))) {
    throw new PeftError('FILE_NOT_FOUND', `config.json not found: ${path} (a model folder holds config.json and model.safetensors)`);
  }
  return { raw: await readJson(path, fs), path };
}

async function readGenerationDefaults(dir: string, fs: FileSystem): Promise<GenerationDefaults> {
  const path = joinPath(dir, 'generation_config.json');
  if (!(await fs.exists(path))) return {};
  const g = await readJson(path, fs);
  const ids = (v: unknown) => (typeof v === 'number' || (Array.isArray(v) && v.every((x) => typeof x === 'number')) ? (v as number | number[]) : null);
  const out: GenerationDefaults = {};
  if (ids(g.eos_token_id) !== null) out.eosTokenId = ids(g.eos_token_id);
  if (typeof g.pad_token_id === 'number') out.padTokenId = g.pad_token_id;
  if (ids(g.bos_token_id) !== null) out.bosTokenId = ids(g.bos_token_id);
  return out;
}

/** Checkpoint names HF keeps in files but that are not parameters (buffers), per body. */
const IGNORED: Record<string, RegExp[]> = {
  model: [/^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/, /^model\.rotary_emb\.inv_freq$/],
  transformer: [/^transformer\.h\.\d+\.attn\.(bias|masked_bias)$/],
};

/**
 * HF names as the model expects them: a checkpoint of the bare body (`layers.0…` without `model.`,
 * GPT-2's `h.0…` without `transformer.`) gets the prefix; buffers are dropped; `lm_head.weight` is
 * dropped when tied (the embedding is that parameter).
 */
function normalizeNames(tensors: Record<string, tf.Tensor>, body: 'model' | 'transformer', tied: boolean): Record<string, tf.Tensor> {
  const heads = /^(lm_head|score)\./;
  const names = Object.keys(tensors);
  const bare = names.length > 0 && !names.some((n) => n.startsWith(`${body}.`));
  const out: Record<string, tf.Tensor> = Object.create(null);
  for (const n of names) {
    const name = bare && !heads.test(n) ? `${body}.${n}` : n;
    if (IGNORED[body].some((r) => r.test(name)) || (tied && name === 'lm_head.weight')) tensors[n].dispose();
    else out[name] = tensors[n];
  }
  return out;
}

async function weightsSource(dir: string, fs: FileSystem): Promise<string> {
  const single = joinPath(dir, 'model.safetensors');
  return (await fs.exists(single)) ? single : joinPath(dir, 'model.safetensors.index.json');
}

function bodyOf(cfg: AnyModelConfig): 'model' | 'transformer' {
  return cfg.modelType === 'gpt2' ? 'transformer' : 'model';
}

/**
 * Loads `dir`'s weights into the model `build` makes. Strict: a tensor the model lacks, or a parameter
 * the files lack, is an error naming them (except names in `allow`).
 */
async function loadInto<M extends CausalLMBase | SeqClsBase>(
  dir: string,
  fs: FileSystem,
  cfg: AnyModelConfig,
  build: (src: ParamSource) => M,
  allow: { missing?: string[]; unexpected?: string[] } = {},
  maxBytes = DEFAULT_MAX_LOAD_BYTES,
): Promise<{ model: M; missing: string[]; unexpected: string[] }> {
  const source = await weightsSource(dir, fs);
  checkBudget(cfg, joinPath(dir, 'config.json'), maxBytes);
  const tensors = normalizeNames(await loadModelWeights(dir, fs, undefined, { maxBytes }), bodyOf(cfg), cfg.tieWordEmbeddings);
  let model: M | undefined;
  try {
    const src = new CheckpointSource(tensors, { source, modelType: cfg.modelType, allowMissing: allow.missing ?? [] });
    const before = new Set(Object.keys(tf.engine().registeredVariables));
    try {
      model = build(src);
    } catch (e) {
      // a build stopped part way: free the parameters made so far
      for (const [name, v] of Object.entries(tf.engine().registeredVariables)) if (!before.has(name)) v.dispose();
      src.release();
      throw e;
    }
    const { missing, unexpected } = model.loadStateDict(tensors, { source });
    const badMissing = missing.filter((n) => !allow.missing?.includes(n));
    const badUnexpected = unexpected.filter((n) => !allow.unexpected?.includes(n));
    if (badMissing.length || badUnexpected.length) {
      const list = (xs: string[]) => xs.slice(0, 10).join(', ') + (xs.length > 10 ? ` … (${xs.length} in all)` : '');
      const parts = [];
      if (badMissing.length) parts.push(`missing tensors ${list(badMissing)}`);
      if (badUnexpected.length) parts.push(`unexpected tensors ${list(badUnexpected)}`);
      throw new PeftError('INVALID_FILE', `${source}: does not match a ${cfg.modelType} model built from config.json: ${parts.join('; ')}`);
    }
    model.generationDefaults = await readGenerationDefaults(dir, fs);
    return { model, missing, unexpected };
  } catch (e) {
    model?.dispose();
    throw e;
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

function causalLM(cfg: AnyModelConfig, src: ParamSource): CausalLMBase {
  return cfg.modelType === 'gpt2' ? new GPT2LMHeadModel(cfg, src) : new LlamaForCausalLM(cfg, src);
}

function seqCls(cfg: AnyModelConfig, cls: Classification, src: ParamSource): SeqClsBase {
  return cfg.modelType === 'gpt2' ? new GPT2ForSequenceClassification(cfg, cls, src) : new LlamaForSequenceClassification(cfg, cls, src);
}

/** HF's AutoModelForCausalLM: llama, mistral, qwen2 (LlamaForCausalLM) and gpt2 (GPT2LMHeadModel). */
export class AutoModelForCausalLM {
  /** Reads `dir`/config.json and the safetensors weights (single file or sharded index; F32/F16/BF16). */
  static async fromPretrained(nameOrPath: string, opts: FromPretrainedOptions = {}): Promise<CausalLMBase> {
    const { dir, fs } = await resolvePretrained(nameOrPath, 'model', opts);
    const { raw, path } = await readConfig(dir, fs);
    const cfg = parseModelConfig(raw, path);
    // quantizationConfig hook: the quantiser reads the weights and builds the model
    if (opts.quantizationConfig) {
      const model = await opts.quantizationConfig.loadCausalLM({ dir, fs, cfg, build: (src) => causalLM(cfg, src), maxBytes: opts.maxBytes ?? DEFAULT_MAX_LOAD_BYTES });
      model.generationDefaults = await readGenerationDefaults(dir, fs);
      return model;
    }
    if (raw.quantization_config !== undefined) {
      throw new PeftError('UNSUPPORTED', `${path}: a quantized checkpoint (quantization_config); pass quantizationConfig, e.g. BitsAndBytesConfig.fromDict(config.quantization_config) from @peftjs/quant`);
    }
    return (await loadInto(dir, fs, cfg, (src) => causalLM(cfg, src), {}, opts.maxBytes)).model;
  }

  /** A randomly initialized model (HF's init) from a config.json object; `maxBytes` caps its size (16 GiB by default). */
  static fromConfig(config: Record<string, unknown>, opts: { maxBytes?: number } = {}): CausalLMBase {
    const cfg = parseModelConfig(config, 'config');
    checkBudget(cfg, 'config', opts.maxBytes ?? DEFAULT_MAX_LOAD_BYTES);
    return causalLM(cfg, new ParamSource(undefined));
  }
}

function classification(raw: Record<string, unknown>, source: string, opts: SeqClsFromPretrainedOptions): Classification {
  const f = parseClassificationFields(raw, source, opts.numLabels);
  const explicit = opts.problemType ?? (typeof raw.problem_type === 'string' ? f.problemType : undefined);
  return { numLabels: f.numLabels, problemType: explicit ?? f.problemType, problemTypeExplicit: explicit !== undefined };
}

/**
 * HF's AutoModelForSequenceClassification for the LLaMA family and GPT-2: the body + `score`.
 * From a causal LM checkpoint (no `score.weight`), `score` is newly initialized (N(0, initializer_range))
 * and `lm_head.weight` is ignored, as in transformers; a warning says so.
 */
export class AutoModelForSequenceClassification {
  static async fromPretrained(nameOrPath: string, opts: SeqClsFromPretrainedOptions = {}): Promise<SeqClsBase> {
    const { dir, fs } = await resolvePretrained(nameOrPath, 'model', opts);
    const { raw, path } = await readConfig(dir, fs);
    const cfg = parseModelConfig(raw, path);
    const cls = classification(raw, path, opts);
    const { model, missing } = await loadInto(dir, fs, cfg, (src) => seqCls(cfg, cls, src), { missing: ['score.weight'], unexpected: ['lm_head.weight'] }, opts.maxBytes);
    if (missing.includes('score.weight')) {
      (opts.onWarning ?? console.warn)(
        `${model.constructor.name}: score.weight was not in ${dir} and is newly initialized; train it (e.g. modules_to_save) before use`,
      );
    }
    return model;
  }

  static fromConfig(config: Record<string, unknown>, opts: Omit<SeqClsFromPretrainedOptions, 'fs' | 'onWarning'> = {}): SeqClsBase {
    const cfg = parseModelConfig(config, 'config');
    const cls = classification(config, 'config', opts);
    checkBudget(cfg, 'config', opts.maxBytes ?? DEFAULT_MAX_LOAD_BYTES, 4 * cls.numLabels * cfg.hiddenSize);
    return seqCls(cfg, cls, new ParamSource(undefined));
  }
}
