import { registerPeftMethod } from '@peftjs/core';
import { lnTuningMethod } from './method';

export { LNTuningConfig, type LNTuningConfigInput } from './config';
export { LNTuningLayer, cloneModule } from './layer';
export { lnTuningMethod, DEFAULT_LN_TUNING_TARGETS } from './method';

registerPeftMethod(lnTuningMethod);
