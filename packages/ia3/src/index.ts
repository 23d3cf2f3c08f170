import { registerPeftMethod } from '@peftjs/core';
import { ia3Method } from './method';

export { IA3Config, type IA3ConfigInput } from './config';
export { IA3Linear } from './layer';
export { ia3Method, DEFAULT_IA3_TARGETS } from './method';

registerPeftMethod(ia3Method);
