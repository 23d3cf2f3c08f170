import { registerPeftMethod } from '@peftjs/core';
import { loraMethod } from './method';

export { LoraConfig, type LoraConfigInput } from './config';
export { LoraLinear, LoraEmbedding, DoraMagnitude, type LoraLayer, type LoraAdapterOptions } from './layer';
export { loraMethod, allLinearNames, DEFAULT_LORA_TARGETS } from './method';

registerPeftMethod(loraMethod);
