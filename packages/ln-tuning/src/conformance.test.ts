// LN tuning passes the shared method conformance suite (@peftjs/core/testing) on the tiny random LLaMA and GPT-2.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LNTuningConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
const gpt2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
const t = { describe, it };
// the copies start equal to the norms; merging swaps the copy in (no arithmetic), so unmerging is exact
const promises = { identityAtInit: true, merge: true, exactUnmerge: true };

registerMethodConformance({ name: 'LN tuning (defaults)', model: llama, config: () => new LNTuningConfig(), promises }, t);
registerMethodConformance({ name: 'LN tuning on GPT-2 (LayerNorm weight and bias)', model: gpt2, config: () => new LNTuningConfig(), promises }, t);
