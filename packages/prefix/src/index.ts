import { registerPeftMethod } from '@peftjs/core';
import { prefixTuningMethod } from './method';

export { PrefixTuningConfig, type PrefixTuningConfigInput } from './config';
export { PrefixEncoder } from './encoder';
export { prefixTuningMethod } from './method';

registerPeftMethod(prefixTuningMethod);
