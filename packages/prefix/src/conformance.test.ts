// Prefix tuning (with and without the projection) passes the shared method conformance suite (@peftjs/core/testing).
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { PrefixTuningConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_prefix_tuning')}base`);
const gpt2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
const t = { describe, it };
const promises = { identityAtInit: false, merge: false };

registerMethodConformance({ name: 'prefix tuning', model: llama, config: () => new PrefixTuningConfig({ numVirtualTokens: 3, taskType: 'CAUSAL_LM' }), promises }, t);
registerMethodConformance({ name: 'prefix tuning with projection', model: llama, config: () => new PrefixTuningConfig({ numVirtualTokens: 3, prefixProjection: true, encoderHiddenSize: 8 }), promises }, t);
registerMethodConformance({ name: 'prefix tuning on GPT-2', model: gpt2, config: () => new PrefixTuningConfig({ numVirtualTokens: 2 }), promises }, t);
