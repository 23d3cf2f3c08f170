// BitsAndBytesConfig: transformers' fields and to_dict(); refusals name the field and say why;
// llmInt8SkipModules keeps those layers fp32.
import { describe, expect, it } from 'vitest';
import { Linear } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { BitsAndBytesConfig, Linear4bit } from './index';

describe('BitsAndBytesConfig', () => {
  it("has transformers' defaults and to_dict()", () => {
    const c = new BitsAndBytesConfig({ loadIn4bit: true });
    expect(c.bnb4bitQuantType).toBe('fp4');
    expect(c.bnb4bitUseDoubleQuant).toBe(false);
    const d = new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, llmInt8SkipModules: ['down_proj'] }).toDict();
    expect(d).toMatchObject({ quant_method: 'bitsandbytes', load_in_4bit: true, _load_in_4bit: true, load_in_8bit: false, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, bnb_4bit_compute_dtype: 'float32', bnb_4bit_quant_storage: 'uint8', llm_int8_skip_modules: ['down_proj'] });
    expect(BitsAndBytesConfig.fromDict(d).toDict()).toEqual(d);
  });

  it('refuses what peftjs does not do, naming the field and the reason', () => {
    expect(() => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitComputeDtype: 'bfloat16' })).toThrow(/bnb4bitComputeDtype: "bfloat16" is not supported: TensorFlow.js computes in float32 only/);
    expect(() => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantStorage: 'float16' })).toThrow(/bnb4bitQuantStorage: "float16"/);
    expect(() => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'int4' as never })).toThrow(/bnb4bitQuantType: must be 'nf4' or 'fp4'/);
    expect(() => new BitsAndBytesConfig({ loadIn8bit: true })).toThrow(/loadIn8bit: LLM.int8\(\)/);
    expect(() => new BitsAndBytesConfig({})).toThrow(/loadIn4bit: must be true/);
    expect(() => BitsAndBytesConfig.fromDict({ quant_method: 'gptq' })).toThrow(/quant_method "gptq" is not supported/);
  });

  it('llmInt8SkipModules keeps those layers fp32 (the output head always is)', async () => {
    const m = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir(), { quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', llmInt8SkipModules: ['down_proj'] }) });
    const mods = [...m.namedModules()];
    expect(mods.filter(([, x]) => x instanceof Linear4bit).length).toBe(4 * 6);
    const down = mods.filter(([n]) => n.endsWith('down_proj'));
    expect(down.length).toBe(4);
    expect(down.every(([, x]) => x instanceof Linear && !(x instanceof Linear4bit))).toBe(true);
    m.dispose();
  });
});
