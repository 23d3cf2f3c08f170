// BitFit passes the shared method conformance suite (@peftjs/core/testing) on Qwen2 (q/k/v biases) and GPT-2.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { BitFitConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const qwen2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
const gpt2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
const t = { describe, it };
// the trained copies start equal to the biases; merging swaps values, so unmerging is exact
const promises = { identityAtInit: true, merge: true, exactUnmerge: true };

registerMethodConformance({ name: 'BitFit on Qwen2', model: qwen2, config: () => new BitFitConfig(), promises }, t);
registerMethodConformance({ name: 'BitFit on GPT-2', model: gpt2, config: () => new BitFitConfig(), promises }, t);
