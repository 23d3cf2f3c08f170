// LoRA, rsLoRA, DoRA and AdaLoRA pass the shared method conformance suite (@peftjs/core/testing) on the
// tiny random LLaMA and GPT-2 of the HF fixtures.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '@peftjs/models';
import { AdaLoraConfig, LoraConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
const gpt2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
const t = { describe, it };

registerMethodConformance({ name: 'LoRA', model: llama, config: () => new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ['q_proj', 'v_proj'] }), promises: { identityAtInit: true, merge: true } }, t);
registerMethodConformance({ name: 'rsLoRA (all-linear)', model: llama, config: () => new LoraConfig({ r: 4, loraAlpha: 8, useRslora: true, targetModules: 'all-linear' }), promises: { identityAtInit: true, merge: true } }, t);
registerMethodConformance({ name: 'DoRA', model: llama, config: () => new LoraConfig({ r: 4, loraAlpha: 8, useDora: true, targetModules: ['q_proj', 'v_proj', 'down_proj'] }), promises: { identityAtInit: true, merge: true } }, t);
registerMethodConformance({ name: 'LoRA with rank_pattern and alpha_pattern', model: llama, config: () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'up_proj'], rankPattern: { v_proj: 2 }, alphaPattern: { up_proj: 3 } }), promises: { identityAtInit: true, merge: true } }, t);
registerMethodConformance({ name: 'LoRA on the embedding (lora_embedding_A/B)', model: llama, config: () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['embed_tokens', 'o_proj'] }), promises: { identityAtInit: true, merge: true } }, t);
registerMethodConformance({ name: 'LoRA on GPT-2 (Conv1D, fan_in_fan_out)', model: gpt2, config: () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['c_attn'], fanInFanOut: true }), promises: { identityAtInit: true, merge: true } }, t);
// the rank allocator's importance averages are freed with the model (its layers' disposeBuffers)
registerMethodConformance({ name: 'AdaLoRA', model: llama, config: () => new AdaLoraConfig({ totalStep: 10, initR: 4, targetR: 2, targetModules: ['q_proj', 'v_proj'] }), promises: { identityAtInit: true, merge: true } }, t);

// sequence classification: the score head trains whole as modules_to_save (saved under its own name) beside LoRA
registerMethodConformance(
  {
    name: 'LoRA, SEQ_CLS (score head in modules_to_save)',
    model: () => AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_lora')}base`),
    config: () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], taskType: 'SEQ_CLS' }),
    inputs: { inputIds: [[5, 9, 14, 3, 27, 8], [0, 0, 11, 6, 19, 2]], attentionMask: [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], labels: [[1], [0]] },
    promises: { identityAtInit: true, merge: true },
    skip: { "generate follows the forward; disabled, it is the base model's": 'a sequence classifier does not generate' },
  },
  t,
);
