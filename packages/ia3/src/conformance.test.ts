// IA3 passes the shared method conformance suite (@peftjs/core/testing) on the tiny random LLaMA and GPT-2.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { IA3Config } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_ia3')}base`);
const gpt2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
const t = { describe, it };

// vectors start at 1: the base model exactly; merge multiplies W (and the bias of non-feed-forward layers) by l
registerMethodConformance({ name: 'IA3', model: llama, config: () => new IA3Config({ targetModules: ['k_proj', 'v_proj', 'down_proj'], feedforwardModules: ['down_proj'] }), promises: { identityAtInit: true, merge: true } }, t);
registerMethodConformance({ name: 'IA3 on GPT-2 (defaults)', model: gpt2, config: () => new IA3Config(), promises: { identityAtInit: true, merge: true } }, t);
