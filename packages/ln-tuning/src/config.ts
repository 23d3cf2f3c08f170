import { z, PeftConfig, targetModulesSchema, basePeftConfigShape, type TaskType } from '@peftjs/core';

const shape = {
  ...basePeftConfigShape,
  /** The norm modules to tune: names (list: exact or `.name` suffix) or a regex (full match). Defaults per model type. */
  targetModules: targetModulesSchema.default(null),
  excludeModules: targetModulesSchema.default(null),
  /** Modules trained whole and saved with the adapter (a classification head). */
  modulesToSave: z.array(z.string()).nullable().default(null),
};

export type LNTuningConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface LNTuningConfig extends Fields {}

/**
 * HF PEFT's LNTuningConfig (`peft_type` LN_TUNING), camelCase:
 * `new LNTuningConfig({ targetModules: ['input_layernorm', 'post_attention_layernorm', 'norm'] })`.
 */
export class LNTuningConfig extends PeftConfig {
  static readonly peftType = 'LN_TUNING';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};

  constructor(input: LNTuningConfigInput = {}) {
    super();
    this.init(input, 'LNTuningConfig');
  }
}
