import { registerPeftMethod } from '@peftjs/core';
import { loraMethod } from './method';
import { adaloraMethod } from './adalora_method';

export { LoraConfig, type LoraConfigInput } from './config';
export { LoraLinear, LoraEmbedding, DoraMagnitude, type LoraLayer, type LoraAdapterOptions } from './layer';
export { loraMethod, DEFAULT_LORA_TARGETS } from './method';
/** HF's `all-linear` target names (core's allLinearTargets, under the name this package exported first). */
export { allLinearTargets as allLinearNames } from '@peftjs/core';
export { AdaLoraConfig, type AdaLoraConfigInput } from './adalora_config';
export { AdaLoraLinear, RankAllocator, orthogonalRegularizer, updateAndAllocate, resetRankAllocator, type AdaLoraAdapterOptions } from './adalora_layer';
export { adaloraMethod } from './adalora_method';
export { COMBINATION_TYPES, addWeightedLoraAdapter, type CombinationType } from './merge';
export { BASE_ADAPTER_NAME } from './mixed';
export { loraLinearOp, setFusedLoraForward, type LoraLinearInputs, type LoraLinearAttrs } from './op';

registerPeftMethod(loraMethod);
registerPeftMethod(adaloraMethod);
