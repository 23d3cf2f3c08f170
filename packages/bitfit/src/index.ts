import { registerPeftMethod } from '@peftjs/core';
import { bitfitMethod } from './method';

export { BitFitConfig, type BitFitConfigInput } from './config';
export { BitFitLayer, isBiasedModule, type Biased } from './layer';
export { bitfitMethod, defaultBitFitTargets } from './method';

registerPeftMethod(bitfitMethod);
