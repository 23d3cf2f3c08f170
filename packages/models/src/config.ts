import { PeftError, checkJsonDepth, type ModelConfig } from '@peftjs/core';

/** Model families this package builds, by HF `model_type`. */
export const LLAMA_FAMILY = ['llama', 'mistral', 'qwen2'] as const;
export const SUPPORTED_MODEL_TYPES = [...LLAMA_FAMILY, 'gpt2'] as const;
export type SupportedModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export type Activation = 'silu' | 'gelu' | 'gelu_new' | 'relu';

/** RoPE inverse-frequency rule, from `rope_parameters` (transformers 5) or `rope_scaling` (4.x). */
export interface RopeSpec {
  type: 'default' | 'linear' | 'llama3';
  theta: number;
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig extends ModelConfig {
  modelType: 'llama' | 'mistral' | 'qwen2';
  intermediateSize: number;
  rmsNormEps: number;
  rope: RopeSpec;
  maxPositionEmbeddings: number;
  /** Bias on q/k/v projections (qwen2: always). */
  qkvBias: boolean;
  /** Bias on o_proj (llama's attention_bias; qwen2: never). */
  oBias: boolean;
  mlpBias: boolean;
  hiddenAct: Activation;
  attentionDropout: number;
  /** Sliding attention window, or null when every layer attends to all positions. */
  slidingWindow: number | null;
  initializerRange: number;
}

export interface GPT2Config extends ModelConfig {
  modelType: 'gpt2';
  nInner: number;
  nPositions: number;
  layerNormEpsilon: number;
  activation: Activation;
  scaleAttnWeights: boolean;
  scaleAttnByInverseLayerIdx: boolean;
  residPdrop: number;
  embdPdrop: number;
  attnPdrop: number;
  initializerRange: number;
}

export type AnyModelConfig = LlamaConfig | GPT2Config;

/** Classification fields (HF's PretrainedConfig num_labels / problem_type). */
export interface ClassificationFields {
  numLabels: number;
  problemType: 'regression' | 'single_label_classification' | 'multi_label_classification';
}

type Raw = Record<string, unknown>;

/**
 * Upper bounds on sizes and counts in config.json, far above any released model, so a hostile or
 * corrupt file fails with an error naming the field instead of allocating gigabytes (a loaded model
 * must also fit the load's `maxBytes` budget, see auto.ts).
 */
export const MODEL_CONFIG_CAPS: Readonly<Record<string, number>> = {
  hidden_size: 65536,
  n_embd: 65536,
  intermediate_size: 1 << 20,
  n_inner: 1 << 20,
  num_hidden_layers: 1024,
  n_layer: 1024,
  num_attention_heads: 1024,
  n_head: 1024,
  num_key_value_heads: 1024,
  head_dim: 4096,
  vocab_size: 1 << 23,
  max_position_embeddings: 1 << 26,
  n_positions: 1 << 26,
  sliding_window: 1 << 26,
};

/** A JSON value described briefly for a message (never the value whole). */
function brief(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return Array.isArray(v) ? `an array of ${v.length}` : 'an object';
}

/** Typed reads of config.json fields; every error names the file and the field. */
class Reader {
  constructor(
    readonly raw: Raw,
    readonly source: string,
  ) {}
  bad(field: string, want: string, got: unknown = this.raw[field]): never {
    throw new PeftError('INVALID_CONFIG', `${this.source}: field "${field}" must be ${want} (got ${brief(got)})`);
  }
  has(field: string): boolean {
    return this.raw[field] !== undefined && this.raw[field] !== null;
  }
  int(field: string, dflt?: number): number {
    const v = this.raw[field];
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new PeftError('INVALID_CONFIG', `${this.source}: missing required field "${field}"`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.bad(field, 'a non-negative integer');
    const cap = MODEL_CONFIG_CAPS[field];
    if (cap !== undefined && v > cap) {
      throw new PeftError('LIMIT_EXCEEDED', `${this.source}: field "${field}" = ${v} is above the limit of ${cap} (no released model comes near; a corrupt file?)`);
    }
    return v;
  }
  posInt(field: string, dflt?: number): number {
    const v = this.int(field, dflt);
    if (v <= 0) this.bad(field, 'a positive integer');
    return v;
  }
  num(field: string, dflt: number): number {
    const v = this.raw[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(field, 'a number');
    return v;
  }
  /** A number ≥ 0 (an epsilon, a dropout probability …). */
  nonNeg(field: string, dflt: number, max = Infinity): number {
    const v = this.num(field, dflt);
    if (v < 0 || v > max) this.bad(field, max === Infinity ? 'a number ≥ 0' : `a number from 0 to ${max}`);
    return v;
  }
  bool(field: string, dflt: boolean): boolean {
    const v = this.raw[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.bad(field, 'true or false');
    return v;
  }
  str(field: string, dflt: string): string {
    const v = this.raw[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'string') this.bad(field, 'a string');
    return v;
  }
  tokenId(field: string): number | number[] | null {
    const v = this.raw[field];
    if (v === undefined || v === null) return null;
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    if (Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isInteger(x))) return v as number[];
    this.bad(field, 'an integer, a list of integers or null');
  }
}

function activation(r: Reader, field: string, dflt: string): Activation {
  const a = r.str(field, dflt);
  switch (a) {
    case 'silu':
    case 'swish':
      return 'silu';
    case 'gelu':
      return 'gelu';
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return 'gelu_new';
    case 'relu':
      return 'relu';
    default:
      throw new PeftError('UNSUPPORTED', `${r.source}: field "${field}": activation "${a}" is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh, relu)`);
  }
}

function ropeSpec(r: Reader, maxPos: number): RopeSpec {
  const rp = (r.raw.rope_parameters ?? r.raw.rope_scaling ?? {}) as Raw;
  const field = r.raw.rope_parameters ? 'rope_parameters' : 'rope_scaling';
  if (typeof rp !== 'object' || Array.isArray(rp)) throw new PeftError('INVALID_CONFIG', `${r.source}: field "${field}" must be an object`);
  // every value here can only give NaN or Inf angles when it is not a positive finite number
  const n = (k: string, d: number) => {
    const v = rp[k];
    if (v === undefined || v === null) return d;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) r.bad(`${field}.${k}`, 'a positive number', v);
    return v;
  };
  const theta = rp.rope_theta !== undefined && rp.rope_theta !== null ? n('rope_theta', 10000) : r.num('rope_theta', 10000);
  if (!(theta > 0)) r.bad('rope_theta', 'a positive number');
  const rawType = rp.rope_type ?? rp.type ?? 'default';
  const type = typeof rawType === 'string' ? rawType : '';
  const spec: RopeSpec = {
    type: 'default',
    theta,
    factor: n('factor', 1),
    lowFreqFactor: n('low_freq_factor', 1),
    highFreqFactor: n('high_freq_factor', 4),
    originalMaxPositionEmbeddings: n('original_max_position_embeddings', maxPos),
  };
  if (type === 'default' || type === 'linear' || type === 'llama3') spec.type = type;
  else throw new PeftError('UNSUPPORTED', `${r.source}: field "${field}.rope_type": ${brief(rawType)} is not supported (default, linear, llama3)`);
  if (type === 'llama3' && !(spec.highFreqFactor > spec.lowFreqFactor)) {
    r.bad(`${field}.high_freq_factor`, `greater than low_freq_factor (${spec.lowFreqFactor})`, spec.highFreqFactor);
  }
  return spec;
}

function base(r: Reader, modelType: string, extra: Omit<ModelConfig, 'modelType' | 'raw' | 'bosTokenId' | 'eosTokenId' | 'padTokenId'>): ModelConfig {
  const pad = r.tokenId('pad_token_id');
  return {
    modelType,
    ...extra,
    bosTokenId: r.tokenId('bos_token_id'),
    eosTokenId: r.tokenId('eos_token_id'),
    padTokenId: Array.isArray(pad) ? pad[0] : pad,
    raw: r.raw,
  };
}

function llamaConfig(r: Reader, modelType: LlamaConfig['modelType']): LlamaConfig {
  const hiddenSize = r.posInt('hidden_size');
  const numAttentionHeads = r.posInt('num_attention_heads');
  const numKeyValueHeads = r.posInt('num_key_value_heads', numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new PeftError('INVALID_CONFIG', `${r.source}: num_attention_heads (${numAttentionHeads}) must be a multiple of num_key_value_heads (${numKeyValueHeads})`);
  }
  const headDim = r.has('head_dim') ? r.posInt('head_dim') : hiddenSize / numAttentionHeads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new PeftError('INVALID_CONFIG', `${r.source}: head_dim (${headDim}, hidden_size / num_attention_heads when absent) must be an even integer`);
  }
  const maxPositionEmbeddings = r.posInt('max_position_embeddings', 2048);
  const qwen = modelType === 'qwen2';
  const attentionBias = modelType === 'llama' ? r.bool('attention_bias', false) : false;
  // Qwen2 uses sliding windows only when use_sliding_window is set; Mistral whenever sliding_window is.
  const useSliding = modelType === 'mistral' || (qwen && r.bool('use_sliding_window', false));
  const slidingWindow = useSliding && r.has('sliding_window') ? r.posInt('sliding_window') : null;
  return {
    ...base(r, modelType, {
      vocabSize: r.posInt('vocab_size'),
      hiddenSize,
      numHiddenLayers: r.posInt('num_hidden_layers'),
      numAttentionHeads,
      numKeyValueHeads,
      headDim,
      tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    }),
    modelType,
    intermediateSize: r.posInt('intermediate_size'),
    rmsNormEps: r.nonNeg('rms_norm_eps', 1e-6),
    rope: ropeSpec(r, maxPositionEmbeddings),
    maxPositionEmbeddings,
    qkvBias: qwen ? true : attentionBias,
    oBias: qwen ? false : attentionBias,
    mlpBias: modelType === 'llama' ? r.bool('mlp_bias', false) : false,
    hiddenAct: activation(r, 'hidden_act', 'silu'),
    attentionDropout: r.nonNeg('attention_dropout', 0, 1),
    slidingWindow,
    initializerRange: r.nonNeg('initializer_range', 0.02),
  };
}

function gpt2Config(r: Reader): GPT2Config {
  const hiddenSize = r.posInt('n_embd', r.has('hidden_size') ? r.posInt('hidden_size') : undefined);
  const heads = r.posInt('n_head', r.has('num_attention_heads') ? r.posInt('num_attention_heads') : undefined);
  if (hiddenSize % heads !== 0) throw new PeftError('INVALID_CONFIG', `${r.source}: n_embd (${hiddenSize}) must be divisible by n_head (${heads})`);
  if (r.bool('add_cross_attention', false)) throw new PeftError('UNSUPPORTED', `${r.source}: field "add_cross_attention": cross-attention is not supported`);
  return {
    ...base(r, 'gpt2', {
      vocabSize: r.posInt('vocab_size'),
      hiddenSize,
      numHiddenLayers: r.posInt('n_layer', r.has('num_hidden_layers') ? r.posInt('num_hidden_layers') : undefined),
      numAttentionHeads: heads,
      numKeyValueHeads: heads,
      headDim: hiddenSize / heads,
      tieWordEmbeddings: r.bool('tie_word_embeddings', true),
    }),
    modelType: 'gpt2',
    nInner: r.has('n_inner') ? r.posInt('n_inner') : 4 * hiddenSize,
    nPositions: r.posInt('n_positions', 1024),
    layerNormEpsilon: r.nonNeg('layer_norm_epsilon', 1e-5),
    activation: activation(r, 'activation_function', 'gelu_new'),
    scaleAttnWeights: r.bool('scale_attn_weights', true),
    scaleAttnByInverseLayerIdx: r.bool('scale_attn_by_inverse_layer_idx', false),
    residPdrop: r.nonNeg('resid_pdrop', 0.1, 1),
    embdPdrop: r.nonNeg('embd_pdrop', 0.1, 1),
    attnPdrop: r.nonNeg('attn_pdrop', 0.1, 1),
    initializerRange: r.nonNeg('initializer_range', 0.02),
  };
}

/**
 * Normalizes HF's config.json into a ModelConfig (camelCase, defaults filled as transformers does).
 * `source` names the file in error messages.
 */
export function parseModelConfig(raw: Record<string, unknown>, source = 'config.json'): AnyModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new PeftError('INVALID_CONFIG', `${source}: not a JSON object`);
  checkJsonDepth(raw, source);
  const modelType = raw.model_type;
  if (typeof modelType !== 'string') {
    throw new PeftError('INVALID_CONFIG', `${source}: missing field "model_type" (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  }
  const r = new Reader(raw, source);
  if ((LLAMA_FAMILY as readonly string[]).includes(modelType)) return llamaConfig(r, modelType as LlamaConfig['modelType']);
  if (modelType === 'gpt2') return gpt2Config(r);
  throw new PeftError(
    'UNKNOWN_MODEL_TYPE',
    `${source}: model_type ${brief(modelType)} is not supported; supported model types: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
  );
}

/** num_labels (from `num_labels` or `id2label`, default 2) and problem_type, as HF's PretrainedConfig reads them. */
export function parseClassificationFields(raw: Record<string, unknown>, source = 'config.json', numLabels?: number): ClassificationFields {
  let n = numLabels;
  if (n === undefined) {
    if (raw.num_labels !== undefined && raw.num_labels !== null) n = raw.num_labels as number;
    else if (raw.id2label && typeof raw.id2label === 'object') n = Object.keys(raw.id2label).length;
    else n = 2;
  }
  if (!Number.isInteger(n) || n < 1 || n > 1 << 20) throw new PeftError('INVALID_CONFIG', `${source}: num_labels must be an integer from 1 to ${1 << 20} (got ${brief(n)})`);
  const pt = raw.problem_type;
  let problemType: ClassificationFields['problemType'];
  if (pt === 'regression' || pt === 'single_label_classification' || pt === 'multi_label_classification') problemType = pt;
  else if (pt === undefined || pt === null) problemType = n === 1 ? 'regression' : 'single_label_classification';
  else throw new PeftError('INVALID_CONFIG', `${source}: field "problem_type" must be regression, single_label_classification or multi_label_classification (got ${brief(pt)})`);
  return { numLabels: n, problemType };
}
