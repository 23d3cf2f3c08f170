import { Conv1D, Linear, PeftError, PEFT_METHOD_SPEC_VERSION, allLinearTargets, matchesModuleList, prefixedParameterKey, type InjectionMethod, type Module } from '@peftjs/core';
import { IA3Config } from './config';
import { IA3Linear } from './layer';

/** HF's default IA3 targets and feed-forward modules per model_type. */
export const DEFAULT_IA3_TARGETS: Record<string, { targets: string[]; feedforward: string[] }> = {
  llama: { targets: ['k_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
  mistral: { targets: ['k_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
  qwen2: { targets: ['q_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
  gpt2: { targets: ['c_attn', 'mlp.c_proj'], feedforward: ['mlp.c_proj'] },
};

export const ia3Method: InjectionMethod<IA3Config, Linear | Conv1D | IA3Linear> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'IA3',
  prefix: 'ia3_',
  kind: 'injection',
  configClass: IA3Config,

  prepareConfig(config, model) {
    const defaults = DEFAULT_IA3_TARGETS[model.config.modelType];
    let targets = config.targetModules;
    let ff = config.feedforwardModules;
    if (targets == null) {
      if (!defaults) throw new PeftError('INVALID_CONFIG', `IA3Config: set "targetModules"; there is no default for model_type "${model.config.modelType}"`);
      targets = defaults.targets;
    } else if (typeof targets === 'string' && targets.toLowerCase() === 'all-linear') {
      targets = allLinearTargets(model, config.taskType);
    }
    if (ff == null) {
      if (!defaults) throw new PeftError('INVALID_CONFIG', `IA3Config: set "feedforwardModules"; there is no default for model_type "${model.config.modelType}"`);
      ff = defaults.feedforward;
    }
    return targets === config.targetModules && ff === config.feedforwardModules ? config : config.with({ targetModules: targets, feedforwardModules: ff });
  },

  targetFields: { targetModules: 'targetModules', excludeModules: 'excludeModules' },

  canWrap(module: Module): module is Linear | Conv1D | IA3Linear {
    return module instanceof Linear || module instanceof Conv1D || module instanceof IA3Linear;
  },

  inject({ target, targetName, adapterName, config }) {
    // HF's _check_target_module_feedforward: a regex is a full match, a list matches a suffix
    const ff = config.feedforwardModules;
    const isFeedforward = ff == null ? false : typeof ff === 'string' ? matchesModuleList(ff, targetName) : ff.some((m) => targetName.endsWith(m));
    let layer: IA3Linear;
    if (target instanceof IA3Linear) layer = target;
    // HF switches fan_in_fan_out on for Conv1D and off for Linear, whatever the config says
    else layer = new IA3Linear(target, isFeedforward, target instanceof Conv1D);
    layer.updateLayer(adapterName, config.initIa3Weights);
    return layer;
  },

  parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'ia3_'),
};
