import { registerPeftMethod } from '@peftjs/core';
import { pTuningMethod } from './method';

export { PromptEncoderConfig, PromptEncoderReparameterizationType, type PromptEncoderConfigInput } from './config';
export { PromptEncoder, BiLSTM, type PromptEncoderKind } from './encoder';
export { pTuningMethod } from './method';

registerPeftMethod(pTuningMethod);
