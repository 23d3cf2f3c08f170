import * as tf from '@tensorflow/tfjs';
import { Conv1D, Linear, PeftError, PEFT_METHOD_SPEC_VERSION, type InjectionMethod, type Module } from '@peftjs/core';
import { AdaLoraConfig } from './adalora_config';
import { AdaLoraLinear, orthogonalRegularizer, updateAndAllocate } from './adalora_layer';
import { LORA_TARGET_FIELDS, loraParameterKey, prepareLoraTargets } from './method';

/** The kept ranks of a module in a rank_pattern (HF's keys, with or without the adapter name). */
function patternOf(config: AdaLoraConfig, targetName: string, adapterName: string): boolean[] | undefined {
  const p = config.rankPattern;
  return p ? (p[`${targetName}.lora_E`] ?? p[`${targetName}.lora_E.${adapterName}`]) : undefined;
}

/**
 * AdaLoRA (HF's peft_type ADALORA): LoRA in SVD form whose ranks are pruned during training by the rank
 * allocator. HF registers it with LoRA's parameter prefix `lora_`; peftjs's registry wants a prefix of its
 * own, so AdaLoRA's is `lora`, which matches the same names (lora_A, lora_E, lora_B).
 */
export const adaloraMethod: InjectionMethod<AdaLoraConfig, Linear | Conv1D | AdaLoraLinear> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'ADALORA',
  prefix: 'lora',
  kind: 'injection',
  configClass: AdaLoraConfig,

  // LoRA's: default targets per model type, 'all-linear', bias = 'all'
  prepareConfig: prepareLoraTargets,

  targetFields: LORA_TARGET_FIELDS,

  canWrap(module: Module): module is Linear | Conv1D | AdaLoraLinear {
    return module instanceof Linear || module instanceof Conv1D || module instanceof AdaLoraLinear;
  },

  inject({ target, targetName, adapterName, config }) {
    // a loaded adapter whose rank_pattern pruned ranks holds only the kept ones (HF's resize_modules_by_rank_pattern);
    // ranknum stays initR, so the scale is the one it was trained with
    const bits = patternOf(config, targetName, adapterName);
    if (bits && bits.length !== config.initR) {
      throw new PeftError('INVALID_CONFIG', `AdaLoraConfig: field "rank_pattern" has ${bits.length} entries for "${targetName}.lora_E" but init_r is ${config.initR}`);
    }
    const r = bits ? bits.filter(Boolean).length : config.initR;
    let layer: AdaLoraLinear;
    if (target instanceof AdaLoraLinear) layer = target;
    // HF switches fan_in_fan_out on for Conv1D and off for Linear, whatever the config says.
    else layer = new AdaLoraLinear(target, target instanceof Conv1D);
    layer.updateLayer(adapterName, {
      r,
      loraAlpha: config.loraAlpha,
      scaling: config.scalingFor(config.initR),
      ranknum: config.initR,
      dropout: config.loraDropout,
      initLoraWeights: config.initLoraWeights,
    });
    if (config.bias === 'lora_only') {
      const bias = layer.getBaseLayer().maybeParam('bias');
      if (bias) bias.trainable = true;
    }
    return layer;
  },

  parameterKey(path, adapterName, config) {
    return loraParameterKey(path, adapterName, config, 'lora');
  },

  lossTerm({ peft, adapterName, config }) {
    return orthogonalRegularizer(peft, adapterName, config.orthRegWeight);
  },

  afterOptimizerStep({ peft, adapterName, step, grads, apply }) {
    // only the adapter being trained (an inactive one is frozen: no gradients to score)
    if (!peft.activeAdapters.includes(adapterName)) return;
    return updateAndAllocate(peft, step, grads, { adapterName, apply });
  },

  // HF saves only the ranks its rank_pattern keeps (resize_state_dict_by_rank_pattern)
  toFileTensors(tensors, config) {
    const pattern = config.rankPattern;
    if (!pattern) return tensors;
    for (const [name, bits] of Object.entries(pattern)) {
      const prefix = name.replace(/\.lora_E(\.[^.]+)?$/, '');
      const kept = bits.flatMap((b, i) => (b ? [i] : []));
      for (const kind of ['lora_E', 'lora_A', 'lora_B'] as const) {
        const key = `base_model.model.${prefix}.${kind}`;
        const t = tensors[key];
        if (!t) throw new PeftError('INVALID_CONFIG', `AdaLoraConfig: field "rank_pattern" names "${name}" but the adapter has no tensor "${key}"`);
        const axis = kind === 'lora_B' ? 1 : 0;
        if (t.shape[axis] === kept.length) continue;
        if (t.shape[axis] !== bits.length) {
          throw new PeftError('SHAPE_MISMATCH', `AdaLoraConfig: field "rank_pattern" has ${bits.length} entries for "${name}" but tensor "${key}" holds ${t.shape[axis]} ranks`);
        }
        const idx = tf.tensor1d(kept, 'int32');
        tensors[key] = tf.gather(t, idx, axis);
        tf.dispose([idx, t]);
      }
    }
    return tensors;
  },
};
