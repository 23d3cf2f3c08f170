import { PeftError, type PeftConfig } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { PrefixTuningConfig } from '@peftjs/prefix';
import { ParBnConfig, SeqBnConfig, type AdapterConfigInput } from './config';

/**
 * AdapterHub's ConfigUnion: several methods that together make one "adapter" (MAM, UniPELT). peftjs holds one
 * method per adapter, so a union expands into named adapters, one per member, to add side by side and activate
 * together: `for (const [n, c] of new MAMConfig().expand('task')) peft.addAdapter(n, c)`.
 */
export class ConfigUnion {
  readonly configs: readonly PeftConfig[];
  constructor(...configs: PeftConfig[]) {
    if (!configs.length) throw new PeftError('INVALID_CONFIG', 'ConfigUnion: give at least one config');
    const types = configs.map((c) => c.peftType);
    const dup = types.find((t, i) => types.indexOf(t) !== i);
    if (dup) throw new PeftError('INVALID_CONFIG', `ConfigUnion: two ${dup} configs; a union holds one config per method (AdapterHub's rule)`);
    this.configs = configs;
  }

  /** The members as `[adapter name, config]`: `<name>_<method>` (`task_prefix_tuning`, `task_bottleneck`, `task_lora`). */
  expand(name: string): [string, PeftConfig][] {
    return this.configs.map((c) => [`${name}_${c.peftType.toLowerCase()}`, c]);
  }
}

export interface MAMConfigInput {
  /** Virtual tokens of the prefix (AdapterHub's prefix_length, 30). */
  numVirtualTokens?: number;
  /** The prefix's reparametrization width (AdapterHub's MAM: bottleneck_size 800). */
  encoderHiddenSize?: number;
  /** Fields of the parallel adapter (ParBnConfig's defaults otherwise). */
  adapter?: AdapterConfigInput;
}

/**
 * AdapterHub's MAMConfig (He et al., 2021, "mix-and-match"): prefix tuning (30 virtual tokens reparametrized
 * through an MLP of width 800) + a parallel bottleneck adapter beside the feed-forward block (ParBnConfig:
 * reduction 2, scaling 4). The prefix is HF PEFT's PrefixTuningConfig with prefixProjection.
 */
export class MAMConfig extends ConfigUnion {
  constructor(input: MAMConfigInput = {}) {
    super(
      new PrefixTuningConfig({ taskType: 'CAUSAL_LM', numVirtualTokens: input.numVirtualTokens ?? 30, prefixProjection: true, encoderHiddenSize: input.encoderHiddenSize ?? 800 }),
      new ParBnConfig(input.adapter),
    );
  }
}

export interface UniPELTConfigInput {
  /** LoRA's rank and alpha (AdapterHub's UniPELT: r 8, alpha 2); targets default per model type (q_proj, v_proj / c_attn). */
  r?: number;
  loraAlpha?: number;
  targetModules?: string[] | null;
  /** Virtual tokens of the prefix (AdapterHub's UniPELT: 10). */
  numVirtualTokens?: number;
  /** Fields of the serial adapter (SeqBnConfig, reduction 16, gated). */
  adapter?: AdapterConfigInput;
}

/**
 * AdapterHub's UniPELTConfig (Mao et al., 2022): LoRA (r 8, alpha 2) + prefix tuning (10 virtual tokens,
 * reparametrized, width 512 as AdapterHub's PrefixTuningConfig) + a gated serial adapter (SeqBnConfig,
 * reduction 16, useGating). AdapterHub also gates the LoRA and the prefix; HF PEFT's LoRA and prefix tuning
 * have no gates, so here only the bottleneck adapter is gated.
 */
export class UniPELTConfig extends ConfigUnion {
  constructor(input: UniPELTConfigInput = {}) {
    super(
      new LoraConfig({ taskType: 'CAUSAL_LM', r: input.r ?? 8, loraAlpha: input.loraAlpha ?? 2, loraDropout: 0, targetModules: input.targetModules ?? null }),
      new PrefixTuningConfig({ taskType: 'CAUSAL_LM', numVirtualTokens: input.numVirtualTokens ?? 10, prefixProjection: true, encoderHiddenSize: 512 }),
      new SeqBnConfig({ useGating: true, ...input.adapter }),
    );
  }
}
