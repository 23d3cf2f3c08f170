import { z, PeftConfig, PeftError, basePeftConfigShape, targetModulesSchema, type TaskType } from '@peftjs/core';

const shape = {
  ...basePeftConfigShape,
  /** Rank of the update B·A. */
  r: z.number().int().positive().default(8),
  /** Scaling numerator: the update is multiplied by loraAlpha / r (or / √r with useRslora). */
  loraAlpha: z.number().default(8),
  loraDropout: z.number().min(0).max(1).default(0),
  /** Module names (list: exact or `.name` suffix), a regex (full match), or 'all-linear'. Defaults per model type. */
  targetModules: targetModulesSchema.default(null),
  excludeModules: targetModulesSchema.default(null),
  /** True when the base layer stores its weight [in, out] (GPT-2's Conv1D). */
  fanInFanOut: z.boolean().default(false),
  bias: z.enum(['none', 'all', 'lora_only']).default('none'),
  useRslora: z.boolean().default(false),
  useDora: z.boolean().default(false),
  /** true: A kaiming-uniform, B zero (HF's default); 'gaussian': A ~ N(0, 1/r); false: B random too (debugging). */
  initLoraWeights: z.union([z.boolean(), z.literal('gaussian')]).default(true),
  modulesToSave: z.array(z.string()).nullable().default(null),
  layersToTransform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().default(null),
  layersPattern: z.union([z.string(), z.array(z.string())]).nullable().default(null),
  /** Per-module rank overrides: regex key (matched as a dotted suffix) → r. */
  rankPattern: z.record(z.string(), z.number().int().positive()).default({}),
  alphaPattern: z.record(z.string(), z.number()).default({}),
};

/** HF LoRA fields peftjs accepts only at their defaults (features not implemented here). */
const hfOnlyDefaults = {
  megatron_config: null,
  megatron_core: 'megatron.core',
  trainable_token_indices: null,
  loftq_config: {},
  eva_config: null,
  corda_config: null,
  lora_ga_config: null,
  velora_config: null,
  alora_invocation_tokens: null,
  use_qalora: false,
  qalora_group_size: 16,
  monteclora_config: null,
  layer_replication: null,
  lora_bias: false,
  target_parameters: null,
  use_bdlora: null,
  arrow_config: null,
  kasa_config: null,
  ensure_weight_tying: false,
};

export type LoraConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { taskType?: TaskType | null };
type LoraFields = z.output<z.ZodObject<typeof shape>>;

export interface LoraConfig extends LoraFields {}

/** HF PEFT's LoraConfig, camelCase: `new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'] })`. */
export class LoraConfig extends PeftConfig {
  static readonly peftType = 'LORA';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = hfOnlyDefaults;

  constructor(input: LoraConfigInput = {}) {
    super();
    this.init(input, 'LoraConfig');
  }

  protected override validate(): void {
    if (this.layersPattern != null && (this.layersToTransform == null || (Array.isArray(this.layersToTransform) && !this.layersToTransform.length))) {
      throw new PeftError('INVALID_CONFIG', 'LoraConfig: field "layersPattern" needs "layersToTransform" too');
    }
    if (typeof this.targetModules === 'string' && this.layersToTransform != null) {
      throw new PeftError('INVALID_CONFIG', 'LoraConfig: "layersToTransform" cannot be used when "targetModules" is a regex string');
    }
  }

  /** The update's scale for a module: alpha / r, or alpha / √r with rsLoRA. */
  scalingFor(r: number, alpha: number): number {
    return this.useRslora ? alpha / Math.sqrt(r) : alpha / r;
  }
}
