import { z, PeftConfig, PeftError, type TaskType } from '@peftjs/core';
import { LoraConfig } from './config';

const positiveInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();

const shape = {
  ...LoraConfig.shape,
  /** The target average rank of the incremental matrices (the final budget is targetR × the number of adapted modules). */
  targetR: positiveInt.default(8),
  /** The initial rank of each incremental matrix (AdaLoRA ignores `r`). */
  initR: nonNegInt.default(12),
  /** Steps of initial fine-tuning before any rank is pruned. */
  tinit: nonNegInt.default(0),
  /** Steps of final fine-tuning once the budget has reached targetR. */
  tfinal: nonNegInt.default(0),
  /** Steps between two budget allocations (HF's field is spelt `deltaT` in the file too). */
  deltaT: positiveInt.default(1),
  /** EMA factor of the sensitivity smoothing. */
  beta1: z.number().default(0.85),
  /** EMA factor of the uncertainty quantification. */
  beta2: z.number().default(0.85),
  /** Weight of the orthogonal regulariser added to the training loss. */
  orthRegWeight: z.number().default(0.5),
  /** The total training steps (required: the budget schedule runs between tinit and totalStep − tfinal). */
  totalStep: positiveInt.nullable().default(null),
  /**
   * The rank allocator's result: `<module>.lora_E` → which of its initR singular values are kept. Set by
   * training, written into adapter_config.json; a loaded adapter's modules get the kept ranks only.
   */
  rankPattern: z.record(z.string(), z.array(z.boolean())).nullable().default(null),
};

export type AdaLoraConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { taskType?: TaskType | null };
type AdaLoraFields = z.output<z.ZodObject<typeof shape>>;

export interface AdaLoraConfig extends AdaLoraFields {}

/**
 * HF PEFT's AdaLoraConfig (a LoraConfig plus the rank allocator's schedule), camelCase:
 * `new AdaLoraConfig({ initR: 12, targetR: 4, totalStep: 1000, targetModules: ['q_proj', 'v_proj'] })`.
 * Defaults and checks are HF PEFT 0.21's.
 */
export class AdaLoraConfig extends PeftConfig {
  static readonly peftType = 'ADALORA';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = LoraConfig.hfOnlyDefaults;

  constructor(input: AdaLoraConfigInput = {}) {
    super();
    this.init(input, 'AdaLoraConfig');
  }

  protected override validate(): void {
    const bad = (msg: string) => new PeftError('INVALID_CONFIG', `AdaLoraConfig: ${msg}`);
    if (this.useDora) throw bad('field "useDora": ADALORA does not support DoRA');
    if (typeof this.targetModules === 'string' && this.layersToTransform != null) {
      throw bad('"layersToTransform" cannot be used when "targetModules" is a regex string');
    }
    if (this.layersPattern != null && (this.layersToTransform == null || (Array.isArray(this.layersToTransform) && !this.layersToTransform.length))) {
      throw bad('field "layersPattern" needs "layersToTransform" too');
    }
    if (this.totalStep == null) throw bad('field "totalStep" is required: AdaLoRA does not work without the total number of training steps (> 0)');
    if (this.orthRegWeight < 0) throw bad(`field "orthRegWeight" must be >= 0, got ${this.orthRegWeight}`);
    if (this.tinit >= this.totalStep - this.tfinal) {
      throw bad(`fields "tinit" (${this.tinit}), "tfinal" (${this.tfinal}) and "totalStep" (${this.totalStep}) leave no budgeting phase (tinit must be < totalStep − tfinal); decrease tfinal/tinit or increase totalStep`);
    }
  }

  /** HF's adapter_config.json; `deltaT` keeps HF's spelling (not delta_t). */
  override toJSON(): Record<string, unknown> {
    const out = super.toJSON();
    delete out.delta_t;
    out.deltaT = this.deltaT;
    return out;
  }

  /** HF's scaling of an AdaLoRA module: lora_alpha (or r when alpha is 0); the forward divides by ranknum. */
  scalingFor(r: number): number {
    return this.loraAlpha > 0 ? this.loraAlpha : r;
  }
}
