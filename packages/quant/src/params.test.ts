// HF counts a 4-bit model's parameters at their logical size (bitsandbytes' Params4bit: numel · 2), so
// print_trainable_parameters gives the same "all params" for the 4-bit and the fp32 base.
import { describe, expect, it } from 'vitest';
import { getPeftModel, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { BitsAndBytesConfig } from './index';

describe('parameter counts on a 4-bit base', () => {
  it('all params equal the fp32 model’s; trainable ones are the adapter’s', async () => {
    const lora = () => new LoraConfig({ r: 8, loraAlpha: 16, targetModules: 'all-linear', taskType: TaskType.CAUSAL_LM });
    const fp = getPeftModel(await AutoModelForCausalLM.fromPretrained(tinyLlamaDir()), lora());
    const q = getPeftModel(
      await AutoModelForCausalLM.fromPretrained(tinyLlamaDir(), { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }) }),
      lora(),
    );
    const [t4, a4] = q.getNbTrainableParameters();
    const [t32, a32] = fp.getNbTrainableParameters();
    expect(t4).toBe(t32);
    expect(a4).toBe(a32);
    expect(t4).toBeGreaterThan(0);
    fp.dispose();
    q.dispose();
  });
});
