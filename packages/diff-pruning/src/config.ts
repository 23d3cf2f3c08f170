import { z, PeftConfig, PeftError, targetModulesSchema, basePeftConfigShape, type TaskType } from '@peftjs/core';

const shape = {
  ...basePeftConfigShape,
  /**
   * The modules whose parameters get a difference vector: names (list: exact or `.name` suffix), a regex (full
   * match) or `all-linear`. Null: every Linear and Conv1D but the output head (`all-linear`).
   */
  targetModules: targetModulesSchema.default(null),
  excludeModules: targetModulesSchema.default(null),
  /** Which parameters of each target module get a diff: `weight`, `bias` (a module without a bias is skipped). */
  diffParameters: z.array(z.enum(['weight', 'bias'])).min(1).default(['weight']),
  /** Fraction of each diffed tensor's entries kept by the projection: k = round(density · numel) per tensor. */
  density: z.number().gt(0).max(1).default(0.005),
  /** λ of the expected-L0 penalty λ · Σ sigmoid(log α − β·log(−γ/ζ)) added to the training loss (Guo et al.'s sparsity_pen). */
  sparsityPenalty: z.number().min(0).default(1.25e-7),
  /** Initial log α of every gate (Guo et al.: 5, gates nearly open, so the diff trains from the first step). */
  initLogAlpha: z.number().default(5),
  /** The hard-concrete stretch (γ, ζ), γ < 0 < 1 < ζ (Louizos et al., 2018: (−0.1, 1.1)). */
  gateStretch: z.tuple([z.number(), z.number()]).default([-0.1, 1.1]),
  /** The hard-concrete temperature β (Louizos et al.: 2/3). */
  gateTemperature: z.number().gt(0).default(2 / 3),
  /**
   * Structured diff pruning: besides the entry gates, one gate per diffed tensor (the group), δ ⊙ z ⊙ z_g, whose
   * expected L0 is P(z_g ≠ 0) · Σ P(z_i ≠ 0): the penalty can switch a whole tensor's diff off.
   */
  structured: z.boolean().default(false),
  /**
   * Whether the diff is projected: a fixed mask (indices + values) instead of the gated dense diff. Set by
   * `projectDiffPruning`; every saved adapter is projected, so a loaded one is.
   */
  projected: z.boolean().default(false),
  /** Modules trained whole and saved with the adapter (a classification head). */
  modulesToSave: z.array(z.string()).nullable().default(null),
};

export type DiffPruningConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface DiffPruningConfig extends Fields {}

/**
 * Diff pruning (Guo et al., 2021; peft_type DIFF_PRUNING, a peftjs method: HF PEFT has none): a per-entry
 * difference δ over the chosen parameters, gated by a hard-concrete L0 gate while it trains, then projected to
 * exactly `density` of the entries. `new DiffPruningConfig({ targetModules: 'all-linear', density: 0.005 })`.
 */
export class DiffPruningConfig extends PeftConfig {
  static readonly peftType = 'DIFF_PRUNING';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};

  constructor(input: DiffPruningConfigInput = {}) {
    super();
    this.init(input, 'DiffPruningConfig');
  }

  protected override validate(): void {
    const [gamma, zeta] = this.gateStretch;
    if (!(gamma < 0) || !(zeta > 1)) {
      throw new PeftError('INVALID_CONFIG', `DiffPruningConfig: field "gateStretch" = [${gamma}, ${zeta}] must be [γ, ζ] with γ < 0 and ζ > 1 (the gate reaches exactly 0 and 1 only then)`);
    }
    if (new Set(this.diffParameters).size !== this.diffParameters.length) {
      throw new PeftError('INVALID_CONFIG', `DiffPruningConfig: field "diffParameters" lists a parameter twice (${this.diffParameters.join(', ')})`);
    }
  }

  /** HF's adapter_config.json: the file always holds the projected diff (save projects a gated one), so it says so. */
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), projected: true };
  }
}
