import { PeftError } from '@peftjs/core';
import type { CausalLMBase } from '@peftjs/models';
import type { QuantType } from './bnb';
import { loadQuantizedCausalLM, type QuantizedLoadArgs } from './load';

export interface BitsAndBytesConfigOptions {
  loadIn4bit?: boolean;
  loadIn8bit?: boolean;
  bnb4bitQuantType?: QuantType;
  bnb4bitUseDoubleQuant?: boolean;
  bnb4bitComputeDtype?: string;
  bnb4bitQuantStorage?: string;
  /** Module names (or name suffixes) kept in fp32, as transformers' llm_int8_skip_modules; the output head always is. */
  llmInt8SkipModules?: string[] | null;
}

const bad = (field: string, msg: string) => new PeftError('INVALID_CONFIG', `BitsAndBytesConfig.${field}: ${msg}`);

/**
 * transformers' BitsAndBytesConfig for 4-bit loading, passed as `quantizationConfig` to
 * `AutoModelForCausalLM.fromPretrained`. Linear layers except the output head (and `llmInt8SkipModules`)
 * become Linear4bit, quantised layer by layer while the checkpoint is read.
 */
export class BitsAndBytesConfig {
  readonly quantMethod = 'bitsandbytes';
  readonly loadIn4bit: boolean;
  readonly loadIn8bit = false;
  readonly bnb4bitQuantType: QuantType;
  readonly bnb4bitUseDoubleQuant: boolean;
  readonly bnb4bitComputeDtype = 'float32';
  readonly bnb4bitQuantStorage = 'uint8';
  readonly llmInt8SkipModules: string[] | null;

  constructor(o: BitsAndBytesConfigOptions = {}) {
    if (o.loadIn8bit) throw bad('loadIn8bit', 'LLM.int8() (8-bit loading) is not implemented by peftjs; use loadIn4bit');
    if (o.loadIn4bit !== true) throw bad('loadIn4bit', 'must be true (peftjs implements 4-bit loading only)');
    this.loadIn4bit = true;
    const qt = o.bnb4bitQuantType ?? 'fp4'; // transformers' default
    if (qt !== 'nf4' && qt !== 'fp4') throw bad('bnb4bitQuantType', `must be 'nf4' or 'fp4', got ${JSON.stringify(qt)}`);
    this.bnb4bitQuantType = qt;
    if (o.bnb4bitUseDoubleQuant !== undefined && typeof o.bnb4bitUseDoubleQuant !== 'boolean') throw bad('bnb4bitUseDoubleQuant', 'must be a boolean');
    this.bnb4bitUseDoubleQuant = o.bnb4bitUseDoubleQuant ?? false;
    const cd = o.bnb4bitComputeDtype ?? 'float32';
    if (cd !== 'float32') {
      throw bad(
        'bnb4bitComputeDtype',
        `${JSON.stringify(cd)} is not supported: TensorFlow.js computes in float32 only (it has no float16/bfloat16 kernels), so the dequantised weights and the matmul are float32`,
      );
    }
    const st = o.bnb4bitQuantStorage ?? 'uint8';
    if (st !== 'uint8') {
      throw bad('bnb4bitQuantStorage', `${JSON.stringify(st)} is not supported: peftjs stores the packed codes as bytes (uint8), as transformers does by default`);
    }
    const skip = o.llmInt8SkipModules ?? null;
    if (skip !== null && !(Array.isArray(skip) && skip.every((s) => typeof s === 'string'))) throw bad('llmInt8SkipModules', 'must be a list of module names or null');
    this.llmInt8SkipModules = skip;
  }

  /** Whether module `name` stays fp32: the output head, or a name (or its last part) in llmInt8SkipModules. */
  skips(name: string, heads: readonly string[]): boolean {
    const last = name.split('.').pop()!;
    if (heads.includes(name) || heads.includes(last)) return true;
    return (this.llmInt8SkipModules ?? []).some((s) => name === s || last === s || name.endsWith(`.${s}`));
  }

  /** transformers' to_dict(): the `quantization_config` of config.json. */
  toDict(): Record<string, unknown> {
    return {
      _load_in_4bit: true,
      _load_in_8bit: false,
      bnb_4bit_compute_dtype: this.bnb4bitComputeDtype,
      bnb_4bit_quant_storage: this.bnb4bitQuantStorage,
      bnb_4bit_quant_type: this.bnb4bitQuantType,
      bnb_4bit_use_double_quant: this.bnb4bitUseDoubleQuant,
      llm_int8_enable_fp32_cpu_offload: false,
      llm_int8_has_fp16_weight: false,
      llm_int8_skip_modules: this.llmInt8SkipModules,
      llm_int8_threshold: 6.0,
      load_in_4bit: true,
      load_in_8bit: false,
      quant_method: 'bitsandbytes',
    };
  }

  /** From config.json's `quantization_config` (transformers' field names). The compute dtype of a saved config is not kept: peftjs computes in float32. */
  static fromDict(d: Record<string, unknown>, source = 'quantization_config'): BitsAndBytesConfig {
    if (d.quant_method !== undefined && d.quant_method !== 'bitsandbytes') {
      throw new PeftError('UNSUPPORTED', `${source}: quant_method ${JSON.stringify(d.quant_method)} is not supported (bitsandbytes only)`);
    }
    return new BitsAndBytesConfig({
      loadIn4bit: (d.load_in_4bit ?? d._load_in_4bit) as boolean,
      loadIn8bit: (d.load_in_8bit ?? d._load_in_8bit) as boolean,
      bnb4bitQuantType: (d.bnb_4bit_quant_type ?? 'fp4') as QuantType,
      bnb4bitUseDoubleQuant: (d.bnb_4bit_use_double_quant ?? false) as boolean,
      bnb4bitQuantStorage: (d.bnb_4bit_quant_storage ?? 'uint8') as string,
      llmInt8SkipModules: (d.llm_int8_skip_modules ?? null) as string[] | null,
    });
  }

  /** The hook `AutoModelForCausalLM.fromPretrained` calls (see ./load.ts). */
  loadCausalLM(args: QuantizedLoadArgs): Promise<CausalLMBase> {
    return loadQuantizedCausalLM(this, args);
  }
}
