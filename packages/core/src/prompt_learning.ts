import * as tf from '@tensorflow/tfjs';
import * as z from './schema';
import { basePeftConfigShape, type PeftConfig } from './config';
import { PeftError } from './errors';
import type { Module } from './nn/module';
import { KVCache, toIdsTensor, type ForwardInputs, type ForwardOutput, type IdsLike, type PreTrainedModel } from './model';

/** peftjs's own file beside HF's: a prompt encoder's weights (HF saves only its output), to resume training. */
export const PROMPT_ENCODER_NAME = 'peftjs_prompt_encoder.safetensors';

/**
 * Fields every prompt-learning config has (HF's PromptLearningConfig). The model-dependent ones
 * (tokenDim, numLayers, numAttentionHeads, numTransformerSubmodules) are filled from the model's config
 * when the adapter is created or loaded, as HF's `_prepare_prompt_learning_config` does.
 */
export const promptLearningConfigShape = {
  ...basePeftConfigShape,
  /** Number of virtual tokens (prompt tuning, P-tuning) or prefix positions (prefix tuning). */
  numVirtualTokens: z.number().int().positive(),
  /** Hidden size of the base model (for prefix tuning under grouped-query attention: kv heads × head dim). */
  tokenDim: z.number().int().positive().nullable().default(null),
  /** 1 for decoder-only models (2 for encoder-decoder, which peftjs does not have). */
  numTransformerSubmodules: z.number().int().positive().nullable().default(null),
  numAttentionHeads: z.number().int().positive().nullable().default(null),
  numLayers: z.number().int().positive().nullable().default(null),
  /** Modules trained and saved whole with the adapter (the classifier head for SEQ_CLS). */
  modulesToSave: z.array(z.string()).nullable().default(null),
};

/** A prompt-learning config after `preparePromptLearningConfig`: the model-dependent fields are set. */
export interface PromptLearningFields {
  numVirtualTokens: number;
  tokenDim: number | null;
  numTransformerSubmodules: number | null;
  numAttentionHeads: number | null;
  numLayers: number | null;
  modulesToSave: string[] | null;
}

/**
 * HF's `_prepare_prompt_learning_config`: fills numLayers, tokenDim, numAttentionHeads and
 * numTransformerSubmodules from the model. With `prefix` (prefix tuning) and a model with
 * num_key_value_heads, tokenDim becomes head_dim × kv heads and numAttentionHeads the kv heads, so the
 * prefix has the shape of the model's keys and values. `encoderHiddenSize` defaults to tokenDim.
 */
export function preparePromptLearningConfig<C extends PeftConfig & PromptLearningFields>(config: C, model: PreTrainedModel, opts: { prefix?: boolean } = {}): C {
  const mc = model.config;
  const changes: Record<string, unknown> = {};
  const numLayers = config.numLayers ?? mc.numHiddenLayers;
  let tokenDim = config.tokenDim ?? mc.hiddenSize;
  let heads = config.numAttentionHeads ?? mc.numAttentionHeads;
  if (opts.prefix && 'num_key_value_heads' in mc.raw) {
    const headDim = mc.raw.head_dim != null ? mc.headDim : Math.floor(tokenDim / heads);
    tokenDim = headDim * mc.numKeyValueHeads;
    heads = mc.numKeyValueHeads;
  }
  if (numLayers !== config.numLayers) changes.numLayers = numLayers;
  if (tokenDim !== config.tokenDim) changes.tokenDim = tokenDim;
  if (heads !== config.numAttentionHeads) changes.numAttentionHeads = heads;
  if (config.numTransformerSubmodules == null) changes.numTransformerSubmodules = 1;
  if ('encoderHiddenSize' in config && (config as { encoderHiddenSize?: number | null }).encoderHiddenSize == null) changes.encoderHiddenSize = tokenDim;
  if (config.numTransformerSubmodules != null && config.numTransformerSubmodules !== 1) {
    throw new PeftError('UNSUPPORTED', `${config.peftType}: num_transformer_submodules = ${config.numTransformerSubmodules} is for encoder-decoder models; peftjs models are decoder-only (1)`);
  }
  return Object.keys(changes).length ? config.with(changes) : config;
}

/** A [B, T] mask (array or tensor) with `n` ones put in front. */
export function prefixMaskWithOnes(mask: IdsLike, n: number): IdsLike {
  if (Array.isArray(mask)) return mask.map((row) => [...new Array<number>(n).fill(1), ...row]);
  const m = toIdsTensor(mask, 'attentionMask');
  return tf.concat([tf.ones([m.shape[0] as number, n], 'int32'), m], 1);
}

function batchSize(inputs: ForwardInputs, what: string): number {
  if (inputs.inputsEmbeds) return inputs.inputsEmbeds.shape[0] as number;
  if (inputs.inputIds instanceof tf.Tensor) return inputs.inputIds.shape[0] as number;
  if (Array.isArray(inputs.inputIds)) return inputs.inputIds.length;
  throw new PeftError('INVALID_ARGUMENT', `${what}: forward needs inputIds or inputsEmbeds`);
}

/** Runs `fn` in a tidy that keeps logits and loss; the cache (its own tensors are kept) passes through. */
function tidyForward(fn: () => ForwardOutput): ForwardOutput {
  let cache: KVCache | undefined;
  const [logits, loss] = tf.tidy(() => {
    const out = fn();
    cache = out.pastKeyValues;
    return out.loss ? [out.logits, out.loss] : [out.logits];
  });
  const out: ForwardOutput = { logits };
  if (loss) out.loss = loss as tf.Scalar;
  if (cache) out.pastKeyValues = cache;
  return out;
}

/**
 * Prompt tuning and P-tuning (HF's PeftModelForCausalLM / ForSequenceClassification forward): the
 * virtual-token embeddings `prompts()` [nvt, D] are put before the input embeddings, the attention mask
 * gets nvt leading ones, causal-LM labels get nvt leading -100s, position ids are ignored (as HF, which
 * warns) so positions run 0..nvt+T-1, and the logits include the virtual positions. In generation only
 * the first step (an empty cache) gets the virtual tokens; later steps find them in the cache.
 */
export function forwardWithVirtualTokens(model: PreTrainedModel, inputs: ForwardInputs, nvt: number, prompts: () => tf.Tensor): ForwardOutput {
  const what = 'prompt learning';
  return tidyForward(() => {
    const { positionIds: _ignored, ...rest } = inputs;
    const cache = inputs.pastKeyValues;
    const attentionMask = inputs.attentionMask !== undefined ? prefixMaskWithOnes(inputs.attentionMask, nvt) : undefined;
    if (cache && cache.length > 0) return model.forward({ ...rest, attentionMask });
    const b = batchSize(inputs, what);
    const embeds = inputs.inputsEmbeds ?? model.getInputEmbeddings().forward(toIdsTensor(inputs.inputIds!, 'inputIds'));
    const p = prompts();
    if (p.rank !== 2 || p.shape[0] !== nvt || p.shape[1] !== embeds.shape[2]) {
      throw new PeftError('SHAPE_MISMATCH', `${what}: the prompt is [${p.shape}] but the model needs [${nvt}, ${embeds.shape[2]}] (token_dim = the model's hidden size)`);
    }
    const inputsEmbeds = tf.concat([tf.tile(p.expandDims(0), [b, 1, 1]), embeds.toFloat()], 1);
    let labels = inputs.labels;
    if (labels !== undefined && model.taskType === 'CAUSAL_LM') {
      labels = tf.concat([tf.fill([b, nvt], -100, 'int32'), toIdsTensor(labels, 'labels')], 1);
    }
    const { inputIds: _ids, inputsEmbeds: _e, ...others } = rest;
    return model.forward({ ...others, inputsEmbeds, attentionMask, labels });
  });
}

/** One layer's prefix: key and value [B, kvHeads, nvt, headDim]. */
export interface PrefixLayer {
  key: tf.Tensor;
  value: tf.Tensor;
}

/**
 * Prefix tuning (HF's forward with `past_key_values`): every layer sees the prefix as past keys and
 * values, the attention mask gets nvt leading ones, position ids (given or defaulted) start at nvt. In
 * generation the prefix seeds the (empty) cache on the first step and stays there.
 */
export function forwardWithPrefix(model: PreTrainedModel, inputs: ForwardInputs, nvt: number, prefix: (batch: number) => PrefixLayer[]): ForwardOutput {
  return tidyForward(() => {
    const attentionMask = inputs.attentionMask !== undefined ? prefixMaskWithOnes(inputs.attentionMask, nvt) : undefined;
    let positionIds = inputs.positionIds;
    if (positionIds !== undefined) positionIds = tf.add(toIdsTensor(positionIds, 'positionIds'), nvt);
    const given = inputs.pastKeyValues;
    if (given && given.length > 0) return model.forward({ ...inputs, attentionMask, positionIds });
    const layers = prefix(batchSize(inputs, 'prefix tuning'));
    if (layers.length !== model.config.numHiddenLayers) {
      throw new PeftError('SHAPE_MISMATCH', `prefix tuning: the prefix has ${layers.length} layers but the model has ${model.config.numHiddenLayers} (num_layers in adapter_config.json)`);
    }
    let cache: KVCache;
    if (given) {
      // generation's cache: seeded with the prefix (not owned: the cache's own tensors are what it appends)
      layers.forEach((l, i) => {
        given.keys[i] = l.key;
        given.values[i] = l.value;
      });
      cache = given;
    } else {
      cache = KVCache.fromTensors(layers);
    }
    const out = model.forward({ ...inputs, attentionMask, positionIds, pastKeyValues: cache });
    if (!given && !inputs.useCache) delete out.pastKeyValues;
    return out;
  });
}

/**
 * Splits prefix tuning's flat output [nvt, 2·L·D] (D = kv heads × head dim) into per-layer keys and
 * values [B, heads, nvt, headDim], as HF's get_prompt: view [nvt, 2L, heads, headDim], permute, layer i's
 * key is slot 2i and its value slot 2i+1. Every tensor stays at rank ≤ 4.
 */
export function splitPrefix(flat: tf.Tensor, batch: number, numLayers: number, heads: number): PrefixLayer[] {
  const [nvt, width] = flat.shape as number[];
  const headDim = width / (2 * numLayers * heads);
  if (!Number.isInteger(headDim)) {
    throw new PeftError('SHAPE_MISMATCH', `prefix tuning: ${width} values per virtual token do not split into 2 × ${numLayers} layers × ${heads} heads`);
  }
  const perSlot = tf.transpose(flat.reshape([nvt, 2 * numLayers, heads, headDim]), [1, 2, 0, 3]);
  const slots = tf.split(perSlot, 2 * numLayers, 0);
  const out: PrefixLayer[] = [];
  for (let i = 0; i < numLayers; i++) {
    const rep = (t: tf.Tensor) => (batch === 1 ? t : tf.tile(t, [batch, 1, 1, 1]));
    out.push({ key: rep(slots[2 * i]), value: rep(slots[2 * i + 1]) });
  }
  return out;
}

/**
 * Checks that a prompt encoder restored from peftjs's encoder checkpoint reproduces the saved
 * `prompt_embeddings` (the two files of one save agree). Asynchronous: the two maxima are computed
 * when called (the inputs may be disposed right after) and read without blocking a GPU backend.
 */
export async function assertEncoderReproduces(encoderOut: tf.Tensor, saved: tf.Tensor, source: string): Promise<void> {
  const both = tf.tidy(() => tf.stack([tf.max(tf.abs(tf.sub(encoderOut, saved))), tf.max(tf.abs(saved))]));
  let diff: number;
  let scale: number;
  try {
    [diff, scale] = Array.from(await both.data());
  } finally {
    both.dispose();
  }
  if (diff > 1e-4 * scale + 1e-6) {
    throw new PeftError('INVALID_FILE', `${source}: the prompt encoder's weights do not reproduce "prompt_embeddings" (max diff ${diff}); the two files come from different saves`);
  }
}

/**
 * A prompt encoder whose output HF saves as `prompt_embeddings` (P-tuning's PromptEncoder, prefix tuning's
 * PrefixEncoder): `embedding` holds the table, and when `reparameterized` the output is computed from it by
 * weights of the encoder's own, which peftjs saves beside HF's file (`encoderState`) to resume training.
 */
export interface ReparameterizedPromptEncoder extends Module {
  readonly reparameterized: boolean;
  readonly embedding: { readonly weight: tf.Variable };
  /** The saved tensor's value: [nvt, width]. */
  output(): tf.Tensor;
  /** Drops the encoder's own weights and keeps `table` as the output. */
  toTable(table: tf.Tensor): void;
}

/** The encoder's own weights by their names in it, cloned (undefined when it is a table); the caller disposes them. */
export function encoderState(encoder: ReparameterizedPromptEncoder): Record<string, tf.Tensor> | undefined {
  if (!encoder.reparameterized) return undefined;
  return Object.fromEntries([...encoder.namedParameters()].map(([k, v]) => [k, v.clone()]));
}

/**
 * Loads a prompt-learning adapter's file into its encoder, the same way for P-tuning and prefix tuning:
 * `prompt_embeddings` must be there with the `expected` shape; a reparameterized encoder takes `state` (peftjs's
 * encoder file) and is checked to reproduce the saved output, or without that file (an HF adapter) warns and
 * continues on the saved table; a table encoder takes the tensor as its table.
 */
export async function loadPromptEmbeddings(
  encoder: ReparameterizedPromptEncoder,
  tensors: Record<string, tf.Tensor>,
  opts: { source: string; method: string; expected: number[]; dims: string; state?: Record<string, tf.Tensor> },
): Promise<void> {
  const { source, method, expected } = opts;
  const t = tensors.prompt_embeddings;
  if (!t) throw new PeftError('INVALID_FILE', `${source}: no "prompt_embeddings" tensor (a ${method} adapter saves one)`);
  if (!tf.util.arraysEqual(t.shape, expected)) {
    throw new PeftError('SHAPE_MISMATCH', `${source}: tensor "prompt_embeddings" has shape [${t.shape}] but this model needs [${expected}] (${opts.dims})`);
  }
  if (encoder.reparameterized && opts.state) {
    const statePath = source.replace(/adapter_model\.safetensors$/, PROMPT_ENCODER_NAME);
    const { missing, unexpected } = encoder.loadStateDict(opts.state, { source: statePath });
    if (missing.length || unexpected.length) {
      throw new PeftError('INVALID_FILE', `${statePath}: not this ${method} encoder's weights (${missing.length ? `missing ${missing.join(', ')}` : ''}${unexpected.length ? ` unexpected ${unexpected.join(', ')}` : ''})`);
    }
    const out = encoder.output();
    try {
      await assertEncoderReproduces(out, t, source);
    } finally {
      out.dispose();
    }
    return;
  }
  if (encoder.reparameterized) {
    console.warn(`${source}: ${method}, trainable, but no ${PROMPT_ENCODER_NAME} beside it (HF saves only the encoder's output); training continues on the saved "prompt_embeddings" directly`);
    tf.tidy(() => encoder.toTable(t.toFloat()));
    return;
  }
  tf.tidy(() => encoder.embedding.weight.assign(t.toFloat()));
}
