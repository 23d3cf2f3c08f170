// Prompt tuning passes the shared method conformance suite (@peftjs/core/testing) on the tiny random LLaMA.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { PromptTuningConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_prompt_tuning')}base`);

// virtual tokens change the logits (and their length) from the start; there is no weight to merge them into
registerMethodConformance({ name: 'prompt tuning', model: llama, config: () => new PromptTuningConfig({ numVirtualTokens: 4, taskType: 'CAUSAL_LM' }), promises: { identityAtInit: false, merge: false } }, { describe, it });
registerMethodConformance({ name: 'prompt tuning (SAMPLE_VOCAB init)', model: llama, config: () => new PromptTuningConfig({ numVirtualTokens: 3, promptTuningInit: 'SAMPLE_VOCAB' }), promises: { identityAtInit: false, merge: false } }, { describe, it });
