import { z, PeftConfig, promptLearningConfigShape, type TaskType } from '@peftjs/core';

/** HF's PromptEncoderReparameterizationType. */
export const PromptEncoderReparameterizationType = { MLP: 'MLP', LSTM: 'LSTM' } as const;
export type PromptEncoderReparameterizationType = (typeof PromptEncoderReparameterizationType)[keyof typeof PromptEncoderReparameterizationType];

const shape = {
  ...promptLearningConfigShape,
  /** 'MLP' (recommended): three Linear layers with ReLU; 'LSTM': a bidirectional LSTM and a two-layer MLP head. */
  encoderReparameterizationType: z.enum(['MLP', 'LSTM']).default('MLP'),
  /** Hidden size of the prompt encoder; defaults to tokenDim. */
  encoderHiddenSize: z.number().int().positive().nullable().default(null),
  /** LSTM layers (the MLP always has HF's fixed three Linear layers and ignores this). */
  encoderNumLayers: z.number().int().positive().default(2),
  /** Dropout between LSTM layers, in training mode. */
  encoderDropout: z.number().min(0).max(1).default(0),
};

export type PromptEncoderConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { numVirtualTokens: number; taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface PromptEncoderConfig extends Fields {}

/**
 * HF PEFT's PromptEncoderConfig (P-tuning), camelCase:
 * `new PromptEncoderConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 20, encoderHiddenSize: 128 })`.
 */
export class PromptEncoderConfig extends PeftConfig {
  static readonly peftType = 'P_TUNING';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = {};

  constructor(input: PromptEncoderConfigInput) {
    super();
    this.init(input, 'PromptEncoderConfig');
  }
}
