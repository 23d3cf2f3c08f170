import { z, PeftConfig, targetModulesSchema, basePeftConfigShape, type TaskType } from '@peftjs/core';

const shape = {
  ...basePeftConfigShape,
  /**
   * The modules whose bias trains: names (list: exact or `.name` suffix) or a regex (full match). Null: every
   * Linear, Conv1D and LayerNorm with a bias, output heads excepted.
   */
  targetModules: targetModulesSchema.default(null),
  excludeModules: targetModulesSchema.default(null),
  /** Modules trained whole and saved with the adapter (a classification head). */
  modulesToSave: z.array(z.string()).nullable().default(null),
};

export type BitFitConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface BitFitConfig extends Fields {}

/**
 * BitFit (Ben Zaken et al., 2022; peft_type BITFIT, a peftjs method: HF PEFT has none): only the bias terms of
 * the targeted modules train. `new BitFitConfig({ targetModules: ['q_proj', 'k_proj', 'v_proj'] })`.
 */
export class BitFitConfig extends PeftConfig {
  static readonly peftType = 'BITFIT';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};

  constructor(input: BitFitConfigInput = {}) {
    super();
    this.init(input, 'BitFitConfig');
  }
}
