// Prompt tuning passes the shared method conformance suite (@peftjs/core/testing) on the tiny random LLaMA.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '@peftjs/models';
import { PromptTuningConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_prompt_tuning')}base`);

// virtual tokens change the logits (and their length) from the start; there is no weight to merge them into
registerMethodConformance({ name: 'prompt tuning', model: llama, config: () => new PromptTuningConfig({ numVirtualTokens: 4, taskType: 'CAUSAL_LM' }), promises: { identityAtInit: false, merge: false } }, { describe, it });
registerMethodConformance({ name: 'prompt tuning (SAMPLE_VOCAB init)', model: llama, config: () => new PromptTuningConfig({ numVirtualTokens: 3, promptTuningInit: 'SAMPLE_VOCAB' }), promises: { identityAtInit: false, merge: false } }, { describe, it });
// a sequence classifier: the virtual tokens and the score head (modules_to_save) train together
registerMethodConformance(
  {
    name: 'prompt tuning, SEQ_CLS',
    model: () => AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_prompt')}base`),
    config: () => new PromptTuningConfig({ numVirtualTokens: 3, taskType: 'SEQ_CLS' }),
    inputs: { inputIds: [[5, 9, 14, 3, 27, 8], [0, 0, 11, 6, 19, 2]], attentionMask: [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], labels: [[1], [0]] },
    promises: { identityAtInit: false, merge: false },
    skip: { "generate follows the forward; disabled, it is the base model's": 'a sequence classifier does not generate' },
  },
  { describe, it },
);
