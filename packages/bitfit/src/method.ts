import { Conv1D, LayerNorm, Linear, PeftError, PEFT_METHOD_SPEC_VERSION, isOutputHead, outputHeads, prefixedParameterKey, targetableModules, type InjectionMethod, type Module, type PreTrainedModel } from '@peftjs/core';
import { BitFitConfig } from './config';
import { BitFitLayer, isBiasedModule } from './layer';

/**
 * The default targets: every module with a bias BitFit can train, output heads excepted. A module name is
 * listed by its last part when every module of that name has a bias, else by its full path.
 */
export function defaultBitFitTargets(model: PreTrainedModel, taskType: string | null): string[] {
  const heads = outputHeads(model, taskType);
  const mods = targetableModules(model).filter(([name]) => !isOutputHead(name, heads));
  // a module an earlier BitFit adapter wrapped counts by the module it wraps (a second adapter with the defaults)
  const wrapped = (m: Module) => (m instanceof BitFitLayer ? m.getBaseLayer() : m);
  const biased = mods.filter(([, m]) => isBiasedModule(wrapped(m))).map(([name]) => name);
  const leafOk = new Map<string, boolean>();
  for (const [name, m] of mods) {
    const leaf = name.split('.').pop()!;
    leafOk.set(leaf, (leafOk.get(leaf) ?? true) && isBiasedModule(wrapped(m)));
  }
  const out = new Set<string>();
  for (const name of biased) {
    const leaf = name.split('.').pop()!;
    out.add(leafOk.get(leaf) ? leaf : name);
  }
  return [...out];
}

export const bitfitMethod: InjectionMethod<BitFitConfig, Linear | Conv1D | LayerNorm | BitFitLayer> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'BITFIT',
  prefix: 'bitfit_',
  kind: 'injection',
  configClass: BitFitConfig,

  prepareConfig(config, model) {
    if (config.targetModules != null) return config;
    const targets = defaultBitFitTargets(model, config.taskType);
    if (!targets.length) {
      throw new PeftError('NO_TARGET_MODULES', `BitFitConfig: this ${model.config.modelType} model has no Linear, Conv1D or LayerNorm with a bias (BitFit trains biases only); set "targetModules" or choose another method`);
    }
    return config.with({ targetModules: targets });
  },

  // a Linear, Conv1D or LayerNorm without a bias reaches inject, whose error says so
  targetFields: { targetModules: 'targetModules', excludeModules: 'excludeModules' },

  canWrap(module: Module): module is Linear | Conv1D | LayerNorm | BitFitLayer {
    return module instanceof Linear || module instanceof Conv1D || module instanceof LayerNorm || module instanceof BitFitLayer;
  },

  inject({ target, targetName, adapterName }) {
    const cls = target.constructor.name;
    let layer: BitFitLayer;
    if (target instanceof BitFitLayer) layer = target;
    else if (isBiasedModule(target)) layer = new BitFitLayer(target);
    else throw new PeftError('INVALID_CONFIG', `BITFIT: target module "${targetName}" (${cls}) has no bias to train`);
    layer.updateLayer(adapterName);
    return layer;
  },

  parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'bitfit_'),
};
