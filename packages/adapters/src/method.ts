import { PeftError, PEFT_METHOD_SPEC_VERSION, ResidualAdd, targetableModules, type InjectionMethod, type Module, type PreTrainedModel } from '@peftjs/core';
import { AdapterConfig, PLACEMENTS } from './config';
import { BottleneckLayer, bottleneckOptions } from './layer';

const LOCATIONS: string[] = Object.values(PLACEMENTS);
/** `…layers.3.output_adapters.adapters.<name>.adapter_down.weight` → the hook, the adapter name and the rest. */
const PARAM_PATH = /^(.*\.(?:attention_adapters|output_adapters))\.adapters\.([^.]+)\.(.+)$/;

/** The layer index of a hook's path (`model.layers.3.output_adapters` → 3). */
function layerIndex(path: string): number {
  const m = /\.(\d+)\.[^.]+$/.exec(path);
  if (!m) throw new PeftError('INVALID_ARGUMENT', `BOTTLENECK: cannot tell the layer of "${path}"`);
  return Number(m[1]);
}

/** The residual hooks of a model (decoder layers register `attention_adapters` / `output_adapters`). */
function residualHooks(model: PreTrainedModel): string[] {
  return targetableModules(model)
    .filter(([name, m]) => (m instanceof ResidualAdd || m instanceof BottleneckLayer) && LOCATIONS.includes(name.split('.').pop()!))
    .map(([name]) => name);
}

/**
 * Bottleneck adapters as a peftjs method (peft_type BOTTLENECK). Targets are the decoder layers' residual
 * connections (`attention_adapters`, `output_adapters`), chosen by mhAdapter / outputAdapter and leaveOut.
 * Saved keys drop `adapters.<name>`: `base_model.model.model.layers.3.output_adapters.adapter_down.weight`.
 */
export const bottleneckMethod: InjectionMethod<AdapterConfig, ResidualAdd | BottleneckLayer> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  kind: 'injection',
  peftType: 'BOTTLENECK',
  prefix: 'adapters',
  configClass: AdapterConfig,
  cannotMergeReason: 'a bottleneck adapter is a non-linear branch (down → activation → up); there is no weight to merge it into',
  targetFields: { targetModules: 'targetModules', layersToTransform: 'layersToTransform' },

  prepareConfig(config, model) {
    const hooks = residualHooks(model);
    if (!hooks.length) {
      throw new PeftError('INVALID_CONFIG', `${config.constructor.name}: this ${model.config.modelType} model has no residual hooks (attention_adapters / output_adapters) for bottleneck adapters`);
    }
    const n = model.config.numHiddenLayers;
    const bad = config.leaveOut.filter((l) => l >= n);
    if (bad.length) throw new PeftError('INVALID_CONFIG', `${config.constructor.name}: field "leaveOut" names layer ${bad[0]}, but the model has ${n} layers (0 … ${n - 1})`);
    const layers = config.leaveOut.length ? [...Array(n).keys()].filter((l) => !config.leaveOut.includes(l)) : null;
    if (layers && !layers.length) throw new PeftError('INVALID_CONFIG', `${config.constructor.name}: field "leaveOut" leaves out every layer`);
    const given = config.layersToTransform;
    if (given !== null && JSON.stringify(given) !== JSON.stringify(layers)) {
      throw new PeftError('INVALID_CONFIG', `${config.constructor.name}: field "layersToTransform" is filled from leaveOut (${JSON.stringify(layers)}); got ${JSON.stringify(given)}`);
    }
    return config.with({ targetModules: config.placements(), layersToTransform: layers });
  },

  canWrap: (m: Module): m is ResidualAdd | BottleneckLayer => m instanceof ResidualAdd || m instanceof BottleneckLayer,

  inject({ target, targetName, adapterName, config, model }) {
    const location = targetName.split('.').pop()!;
    const idx = layerIndex(targetName);
    const layer = target instanceof BottleneckLayer ? target : new BottleneckLayer(target, location, idx);
    layer.addAdapter(adapterName, bottleneckOptions(config, model.config.hiddenSize, idx));
    return layer;
  },

  parameterKey(path, adapterName) {
    const m = PARAM_PATH.exec(path);
    return m && m[2] === adapterName ? `${m[1]}.${m[3]}` : undefined;
  },
};
