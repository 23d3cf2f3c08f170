import { PeftError, PEFT_METHOD_SPEC_VERSION, isLayer, prefixedParameterKey, type InjectionMethod, type Layer, type Module } from '@peftjs/core';
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

export const lnTuningMethod: InjectionMethod<LNTuningConfig, Module & Layer> = {
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

  targetFields: { targetModules: 'targetModules', excludeModules: 'excludeModules' },

  // any layer (its own included); HF's LN tuning takes whatever the targets name
  canWrap: isLayer,

  inject({ target, adapterName }) {
    const layer = target instanceof LNTuningLayer ? target : new LNTuningLayer(target);
    layer.updateLayer(adapterName);
    return layer;
  },

  parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'ln_tuning_'),
};
