import { PeftError, PEFT_METHOD_SPEC_VERSION, isLayer, type Module, type PeftMethod } from '@peftjs/core';
import { LNTuningConfig } from './config';
import { LNTuningLayer } from './layer';

/** HF's default LN tuning targets per model_type (TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING). */
export const DEFAULT_LN_TUNING_TARGETS: Record<string, string[]> = {
  llama: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  mistral: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  gemma: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  qwen2: ['post_attention_layernorm'],
  qwen3: ['post_attention_layernorm'],
  gpt2: ['ln_1', 'ln_2', 'ln_f'],
  gptj: ['ln_1', 'ln_f'],
  bloom: ['input_layernorm', 'post_attention_layernorm', 'ln_f'],
  falcon: ['input_layernorm', 'post_attention_layernorm', 'ln_f'],
  phi: ['input_layernorm', 'final_layernorm'],
};

export const lnTuningMethod: PeftMethod<LNTuningConfig> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'LN_TUNING',
  prefix: 'ln_tuning_',
  kind: 'injection',
  configClass: LNTuningConfig,

  prepareConfig(config, model) {
    if (config.targetModules != null) return config;
    const targets = DEFAULT_LN_TUNING_TARGETS[model.config.modelType];
    if (!targets) throw new PeftError('INVALID_CONFIG', `LNTuningConfig: set "targetModules"; there is no default for model_type "${model.config.modelType}"`);
    return config.with({ targetModules: targets });
  },

  canWrap(module: Module) {
    return isLayer(module);
  },

  inject({ target, targetName, adapterName }) {
    let layer: LNTuningLayer;
    if (target instanceof LNTuningLayer) layer = target;
    else if (isLayer(target)) layer = new LNTuningLayer(target);
    else throw new PeftError('INVALID_CONFIG', `LN_TUNING cannot wrap "${targetName}" (${(target as Module).constructor.name})`);
    layer.updateLayer(adapterName);
    return layer;
  },
};
