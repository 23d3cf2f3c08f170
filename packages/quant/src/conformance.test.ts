// QLoRA — LoRA on a 4-bit (NF4, double-quantised) base prepared for k-bit training — passes the shared method
// conformance suite (@peftjs/core/testing) on the tiny random LLaMA.
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { BitsAndBytesConfig, prepareModelForKbitTraining } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const bnb = () => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true });

registerMethodConformance(
  {
    name: "QLoRA's LoRA on a 4-bit base",
    model: async () => prepareModelForKbitTraining(await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`, { quantizationConfig: bnb() })),
    config: () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'] }),
    // a merge dequantises the 4-bit weight in place and adds ΔW to it (requantizeModel packs it again, with HF's warning)
    promises: { identityAtInit: true, merge: true },
  },
  { describe, it },
);
