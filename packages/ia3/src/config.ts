import { z, PeftConfig, PeftError, basePeftConfigShape, targetModulesSchema, type TaskType } from '@peftjs/core';

const shape = {
  ...basePeftConfigShape,
  /** Module names (list: exact or `.name` suffix), a regex (full match), or 'all-linear'. Defaults per model type. */
  targetModules: targetModulesSchema.default(null),
  excludeModules: targetModulesSchema.default(null),
  /** Targets whose input is scaled (the others' output is); a subset of targetModules. Defaults per model type. */
  feedforwardModules: targetModulesSchema.default(null),
  /** True when the base layer stores its weight [in, out] (GPT-2's Conv1D; switched on for Conv1D, off for Linear, as HF). */
  fanInFanOut: z.boolean().default(false),
  modulesToSave: z.array(z.string()).nullable().default(null),
  /** true: the vectors start at 1 (the model is unchanged); false: random (debugging). */
  initIa3Weights: z.boolean().default(true),
};

export type IA3ConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface IA3Config extends Fields {}

/** HF PEFT's IA3Config, camelCase: `new IA3Config({ targetModules: ['k_proj', 'v_proj', 'down_proj'], feedforwardModules: ['down_proj'] })`. */
export class IA3Config extends PeftConfig {
  static readonly peftType = 'IA3';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};

  constructor(input: IA3ConfigInput = {}) {
    super();
    this.init(input, 'IA3Config');
  }

  protected override validate(): void {
    const t = this.targetModules;
    const f = this.feedforwardModules;
    if (Array.isArray(t) && Array.isArray(f)) {
      const extra = f.filter((m) => !t.includes(m));
      if (extra.length) throw new PeftError('INVALID_CONFIG', `IA3Config: field "feedforwardModules" must be a subset of "targetModules" (${extra.map((m) => `"${m}"`).join(', ')} is not a target)`);
    }
  }
}
