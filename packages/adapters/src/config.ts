import { z, PeftConfig, PeftError, basePeftConfigShape, targetModulesSchema, type TaskType } from '@peftjs/core';

/** The bottleneck's non-linearities (AdapterHub's `non_linearity`; swish and silu are the same function). */
export const ADAPTER_ACTIVATIONS = ['relu', 'gelu', 'swish', 'silu', 'tanh'] as const;
export type AdapterActivation = (typeof ADAPTER_ACTIVATIONS)[number];

/** Where an adapter sits in a decoder layer: after attention (mhAdapter) or after the feed-forward block (outputAdapter). */
export const PLACEMENTS = { attention: 'attention_adapters', output: 'output_adapters' } as const;

const positive = z.number().positive();

const shape = {
  ...basePeftConfigShape,
  /**
   * The residual hooks the adapter replaces; filled from `mhAdapter` / `outputAdapter` (`attention_adapters`,
   * `output_adapters`). Set it only to what those fields give.
   */
  targetModules: targetModulesSchema.default(null),
  /** The layers that get adapters; filled from `leaveOut` (every layer but those). */
  layersToTransform: z.array(z.number().int().nonnegative()).nullable().default(null),
  /** An adapter after the attention block, before its residual add (AdapterHub's mh_adapter). */
  mhAdapter: z.boolean().default(false),
  /** An adapter after the feed-forward block, before its residual add (AdapterHub's output_adapter). */
  outputAdapter: z.boolean().default(true),
  /** The bottleneck width; when null it is hidden_size // reductionFactor. */
  adapterSize: z.number().int().positive().nullable().default(null),
  /** bottleneck = hidden_size // reductionFactor (at least 1); a map gives it per layer ("0", "1" …, "default"). */
  reductionFactor: z.union([positive, z.record(z.string(), positive)]).default(16),
  /** The bottleneck's non-linearity (AdapterHub's non_linearity). */
  adapterAct: z.enum(ADAPTER_ACTIVATIONS).default('relu'),
  /** Dropout on the adapter's scaled output (AdapterHub's dropout). */
  adapterDropout: z.number().min(0).lt(1).default(0),
  /** Parallel adapter (He et al.): reads the sub-block's input, its output is added to the sub-block's output (AdapterHub's is_parallel). */
  parallel: z.boolean().default(false),
  /** Serial: the adapter reads sub-block output + residual (Pfeiffer) rather than the sub-block output alone (Houlsby). */
  originalLnBefore: z.boolean().default(true),
  /** Adds the sub-block's residual to the result (the decoder's own residual connection). */
  originalLnAfter: z.boolean().default(true),
  /** Serial: the adapter's own skip connection takes the sub-block output (true) or the adapter's input (false). */
  residualBeforeLn: z.boolean().default(true),
  /** With lnAfter: the adapter's skip connection is added before (true) or after (false) adapter_norm_after. */
  adapterResidualBeforeLn: z.boolean().default(false),
  /** A LayerNorm on the adapter's input, before the down projection (adapter_norm_before). */
  lnBefore: z.boolean().default(false),
  /** A LayerNorm on the adapter's output (adapter_norm_after). */
  lnAfter: z.boolean().default(false),
  /** A fixed factor, one learned scalar ('learned') or one learned factor per channel ('channel'); learned ones start at 1. */
  scaling: z.union([z.number(), z.enum(['learned', 'channel'])]).default(1),
  /** A learned gate sigmoid(Linear(hidden, 1)), averaged over the sequence, multiplies the output (UniPELT). */
  useGating: z.boolean().default(false),
  /** Layers without adapters. */
  leaveOut: z.array(z.number().int().nonnegative()).default([]),
  /**
   * 'mam_adapter' (the default): down projection kaiming-uniform, up projection and biases zero, so a fresh
   * adapter is the identity. 'bert' (N(0, 0.02) weights) and 'houlsby' (N(0, 0.01) truncated at ±0.02) are
   * AdapterHub's other inits: near the identity, not at it.
   */
  initWeights: z.enum(['mam_adapter', 'bert', 'houlsby']).default('mam_adapter'),
  modulesToSave: z.array(z.string()).nullable().default(null),
};

export type AdapterConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface AdapterConfig extends Fields {}

/**
 * Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2020, He et al. 2021 for parallel), AdapterHub's
 * BnConfig in camelCase: `new AdapterConfig({ reductionFactor: 16, adapterAct: 'relu' })`. The defaults are
 * SeqBnConfig's (AdapterHub's 'pfeiffer'). peft_type `BOTTLENECK` (peftjs's own: HF PEFT has no such method).
 */
export class AdapterConfig extends PeftConfig {
  static readonly peftType = 'BOTTLENECK';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};

  constructor(input: AdapterConfigInput = {}) {
    super();
    this.init(input, new.target.name);
  }

  protected override validate(): void {
    const where = this.constructor.name;
    if (!this.mhAdapter && !this.outputAdapter) {
      throw new PeftError('INVALID_CONFIG', `${where}: fields "mhAdapter" and "outputAdapter" are both false; the adapter would sit nowhere`);
    }
    if (typeof this.scaling === 'number' && !Number.isFinite(this.scaling)) throw new PeftError('INVALID_CONFIG', `${where}: field "scaling" must be finite`);
    const rf = this.reductionFactor;
    if (typeof rf === 'object') {
      for (const k of Object.keys(rf)) {
        if (k !== 'default' && !/^\d+$/.test(k)) throw new PeftError('INVALID_CONFIG', `${where}: field "reductionFactor" key "${k}" must be a layer index or "default"`);
      }
    }
    const want = this.placements();
    const t = this.targetModules;
    if (t !== null && (!Array.isArray(t) || t.length !== want.length || want.some((p) => !t.includes(p)))) {
      throw new PeftError('INVALID_CONFIG', `${where}: field "targetModules" is filled from mhAdapter/outputAdapter (${JSON.stringify(want)}); got ${JSON.stringify(t)}`);
    }
  }

  /** The residual hooks this config puts adapters on. */
  placements(): string[] {
    return [...(this.mhAdapter ? [PLACEMENTS.attention] : []), ...(this.outputAdapter ? [PLACEMENTS.output] : [])];
  }

  /** The bottleneck width at layer `layer` of a model with hidden size `hiddenSize` (AdapterHub: int(hidden // rf), at least 1). */
  bottleneckSize(hiddenSize: number, layer: number): number {
    if (this.adapterSize != null) return this.adapterSize;
    let rf = this.reductionFactor;
    if (typeof rf === 'object') {
      const v = rf[String(layer)] ?? rf.default;
      if (v === undefined) throw new PeftError('INVALID_CONFIG', `${this.constructor.name}: field "reductionFactor" has no entry for layer ${layer} and no "default"`);
      rf = v;
    }
    return Math.max(1, Math.floor(hiddenSize / rf));
  }
}

/** The fields of a preset; what the caller passes overrides them. */
function preset(fields: AdapterConfigInput, input: AdapterConfigInput): AdapterConfigInput {
  return { ...fields, ...input };
}

const SEQ_BN: AdapterConfigInput = {
  mhAdapter: false, outputAdapter: true, reductionFactor: 16, adapterAct: 'relu',
  originalLnBefore: true, originalLnAfter: true, residualBeforeLn: true, adapterResidualBeforeLn: false, lnBefore: false, lnAfter: false,
};
const DOUBLE_SEQ_BN: AdapterConfigInput = { ...SEQ_BN, mhAdapter: true, outputAdapter: true, adapterAct: 'swish', originalLnBefore: false };
const PAR_BN: AdapterConfigInput = { ...SEQ_BN, originalLnBefore: false, reductionFactor: 2, parallel: true, scaling: 4.0 };

/** AdapterHub's SeqBnConfig ('pfeiffer', Pfeiffer et al. 2020): one serial adapter after the feed-forward block, reduction 16, ReLU. */
export class SeqBnConfig extends AdapterConfig {
  constructor(input: AdapterConfigInput = {}) {
    super(preset(SEQ_BN, input));
  }
}

/** AdapterHub's DoubleSeqBnConfig ('houlsby', Houlsby et al. 2019): serial adapters after attention and after the feed-forward block, reduction 16, swish. */
export class DoubleSeqBnConfig extends AdapterConfig {
  constructor(input: AdapterConfigInput = {}) {
    super(preset(DOUBLE_SEQ_BN, input));
  }
}

/** AdapterHub's ParBnConfig ('parallel', He et al. 2021): a parallel adapter beside the feed-forward block, reduction 2, ReLU, scaling 4. */
export class ParBnConfig extends AdapterConfig {
  constructor(input: AdapterConfigInput = {}) {
    super(preset(PAR_BN, input));
  }
}

/** AdapterHub's names for the presets (ADAPTER_CONFIG_MAP), old and new. */
export const ADAPTER_PRESETS = {
  seq_bn: SeqBnConfig,
  pfeiffer: SeqBnConfig,
  double_seq_bn: DoubleSeqBnConfig,
  houlsby: DoubleSeqBnConfig,
  par_bn: ParBnConfig,
  parallel: ParBnConfig,
} as const;

/** A preset by AdapterHub's name (`'pfeiffer'`, `'seq_bn'`, `'houlsby'`, `'double_seq_bn'`, `'parallel'`, `'par_bn'`). */
export function adapterConfigFromName(name: string, input: AdapterConfigInput = {}): AdapterConfig {
  const cls = Object.hasOwn(ADAPTER_PRESETS, name) ? ADAPTER_PRESETS[name as keyof typeof ADAPTER_PRESETS] : undefined;
  if (!cls) throw new PeftError('INVALID_CONFIG', `unknown adapter preset "${name}"; presets: ${Object.keys(ADAPTER_PRESETS).join(', ')} (MAM and UniPELT are unions: MAMConfig, UniPELTConfig)`);
  return new cls(input);
}
