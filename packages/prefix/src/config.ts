import { z, PeftConfig, promptLearningConfigShape, type TaskType } from '@peftjs/core';

const shape = {
  ...promptLearningConfigShape,
  /** Hidden size of the projection MLP (prefixProjection); defaults to tokenDim. */
  encoderHiddenSize: z.number().int().positive().nullable().default(null),
  /** Reparameterize the prefix through Embedding(nvt, D) → Linear → tanh → Linear (HF's prefix_projection). */
  prefixProjection: z.boolean().default(false),
  /** null: random (N(0, 1) embeddings); 'zero': the prefix starts at zero. */
  initWeights: z.literal('zero').nullable().default(null),
};

export type PrefixTuningConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { numVirtualTokens: number; taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface PrefixTuningConfig extends Fields {}

/**
 * HF PEFT's PrefixTuningConfig, camelCase:
 * `new PrefixTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 20, prefixProjection: true, encoderHiddenSize: 128 })`.
 */
export class PrefixTuningConfig extends PeftConfig {
  static readonly peftType = 'PREFIX_TUNING';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};

  constructor(input: PrefixTuningConfigInput) {
    super();
    this.init(input, 'PrefixTuningConfig');
  }
}
