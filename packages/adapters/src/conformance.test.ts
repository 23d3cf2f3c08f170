// Bottleneck adapters (every preset, and the gated / learned-scaling / norm options) pass the shared method
// conformance suite (@peftjs/core/testing) on the tiny random LLaMA and GPT-2 of the HF fixtures.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { AdapterConfig, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
const gpt2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
const t = { describe, it };
const promises = { identityAtInit: true, merge: false };

registerMethodConformance({ name: 'SeqBn (pfeiffer)', model: llama, config: () => new SeqBnConfig({ reductionFactor: 4, adapterDropout: 0.1 }), promises }, t);
registerMethodConformance({ name: 'DoubleSeqBn (houlsby)', model: llama, config: () => new DoubleSeqBnConfig({ reductionFactor: 4 }), promises }, t);
registerMethodConformance({ name: 'ParBn (parallel)', model: llama, config: () => new ParBnConfig(), promises }, t);
registerMethodConformance({
  name: 'gated, learned scaling, norms before and after',
  model: llama,
  config: () => new AdapterConfig({ mhAdapter: true, useGating: true, scaling: 'learned', lnBefore: true, lnAfter: true, reductionFactor: 4 }),
  promises,
}, t);
registerMethodConformance({ name: 'SeqBn on GPT-2', model: gpt2, config: () => new SeqBnConfig({ reductionFactor: 4, scaling: 'channel' }), promises }, t);
registerMethodConformance({ name: 'ParBn on GPT-2, gated', model: gpt2, config: () => new ParBnConfig({ mhAdapter: true, useGating: true, leaveOut: [0] }), promises }, t);
