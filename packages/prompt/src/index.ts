import { registerPeftMethod } from '@peftjs/core';
import { promptTuningMethod } from './method';

export { PromptTuningConfig, PromptTuningInit, type PromptTuningConfigInput } from './config';
export { PromptEmbedding, promptTuningMethod, loadPromptTuningInitText, textInitIds } from './method';

registerPeftMethod(promptTuningMethod);
