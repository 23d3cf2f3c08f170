import {
  Conv1D,
  Embedding,
  Linear,
  PeftError,
  allLinearTargets,
  findPatternKey,
  PEFT_METHOD_SPEC_VERSION,
  prefixedParameterKey,
  type InjectionMethod,
  type PeftConfig,
  type PreTrainedModel,
  type Module,
} from '@peftjs/core';
import { LoraConfig } from './config';
import { LoraEmbedding, LoraLinear } from './layer';
import { addWeightedLoraAdapter } from './merge';

/** HF's default LoRA targets per model_type, used when targetModules is not given. */
export const DEFAULT_LORA_TARGETS: Record<string, string[]> = {
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  gpt2: ['c_attn'],
};

/** What LoRA wraps: linear layers and embeddings, and its own layers (a further adapter). */
export type LoraTarget = Linear | Conv1D | Embedding | LoraLinear | LoraEmbedding;

/** The config fields of LoRA's target spec (AdaLoRA's too). */
export const LORA_TARGET_FIELDS = { targetModules: 'targetModules', excludeModules: 'excludeModules', layersToTransform: 'layersToTransform', layersPattern: 'layersPattern' } as const;

/** LoRA's parameters: HF's `lora_…<adapter>` names, and the biases that `bias` trains (saved under their own names). */
export function loraParameterKey(path: string, adapterName: string, config: { bias: string }, prefix = 'lora_'): string | undefined {
  const key = prefixedParameterKey(path, adapterName, prefix);
  if (key !== undefined) return key;
  if (config.bias === 'all') return path.includes('bias') ? path : undefined;
  if (config.bias === 'lora_only') return path.endsWith('.base_layer.bias') ? path : undefined;
  return undefined;
}

/**
 * LoRA's (and AdaLoRA's) prepareConfig: the default targets of the model type when none are given, `all-linear`
 * expanded to module names, and with bias 'all' every bias of the model made trainable.
 */
export function prepareLoraTargets<C extends PeftConfig & { targetModules: string | string[] | null; bias: string }>(config: C, model: PreTrainedModel): C {
  let targets = config.targetModules;
  if (targets == null) {
    targets = DEFAULT_LORA_TARGETS[model.config.modelType] ?? null;
    if (!targets) {
      throw new PeftError('INVALID_CONFIG', `${config.constructor.name}: set "targetModules"; there is no default for model_type "${model.config.modelType}"`);
    }
  } else if (typeof targets === 'string' && targets.toLowerCase() === 'all-linear') {
    targets = allLinearTargets(model, config.taskType);
  }
  if (config.bias === 'all') {
    for (const [name, p] of model.namedParameters()) if (name.includes('bias')) p.trainable = true;
  }
  return targets === config.targetModules ? config : config.with({ targetModules: targets });
}

export const loraMethod: InjectionMethod<LoraConfig, LoraTarget> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'LORA',
  prefix: 'lora_',
  kind: 'injection',
  configClass: LoraConfig,

  prepareConfig: prepareLoraTargets,

  targetFields: LORA_TARGET_FIELDS,

  canWrap(module: Module): module is LoraTarget {
    return module instanceof Linear || module instanceof Conv1D || module instanceof Embedding || module instanceof LoraLinear || module instanceof LoraEmbedding;
  },

  inject({ target, targetName, adapterName, config }) {
    const rKey = findPatternKey(config.rankPattern, targetName);
    const aKey = findPatternKey(config.alphaPattern, targetName);
    const r = rKey !== undefined ? config.rankPattern[rKey] : config.r;
    const alpha = aKey !== undefined ? config.alphaPattern[aKey] : config.loraAlpha;
    const opts = {
      r,
      loraAlpha: alpha,
      scaling: config.scalingFor(r, alpha),
      dropout: config.loraDropout,
      initLoraWeights: config.initLoraWeights,
      useDora: config.useDora,
    };
    let layer: LoraLinear | LoraEmbedding;
    if (target instanceof LoraLinear || target instanceof LoraEmbedding) layer = target;
    // HF switches fan_in_fan_out on for Conv1D and off for Linear, whatever the config says.
    else if (target instanceof Linear || target instanceof Conv1D) layer = new LoraLinear(target, target instanceof Conv1D);
    else layer = new LoraEmbedding(target);
    layer.updateLayer(adapterName, opts);
    if (config.bias === 'lora_only') {
      const bias = layer.getBaseLayer().maybeParam('bias');
      if (bias) bias.trainable = true;
    }
    return layer;
  },

  addWeightedAdapter: addWeightedLoraAdapter,

  parameterKey(path, adapterName, config) {
    const key = loraParameterKey(path, adapterName, config);
    // DoRA's magnitude is a bare vector in HF's file
    return key?.endsWith('.lora_magnitude_vector.weight') ? key.slice(0, -'.weight'.length) : key;
  },
};
