// P-tuning (MLP and LSTM prompt encoders) passes the shared method conformance suite (@peftjs/core/testing).
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { PromptEncoderConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_ptuning_mlp')}base`);
const t = { describe, it };
const promises = { identityAtInit: false, merge: false };

registerMethodConformance({ name: 'P-tuning (MLP)', model: llama, config: () => new PromptEncoderConfig({ numVirtualTokens: 4, encoderHiddenSize: 8, taskType: 'CAUSAL_LM' }), promises }, t);
registerMethodConformance({ name: 'P-tuning (LSTM)', model: llama, config: () => new PromptEncoderConfig({ numVirtualTokens: 3, encoderHiddenSize: 8, encoderReparameterizationType: 'LSTM' }), promises }, t);
