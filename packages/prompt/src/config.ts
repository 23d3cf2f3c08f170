import { z, PeftConfig, PeftError, promptLearningConfigShape, type TaskType } from '@peftjs/core';

/** How the virtual-token embeddings start (HF's PromptTuningInit). */
export const PromptTuningInit = {
  /** Random soft tokens, N(0, 1) (may fall outside the embedding manifold). */
  RANDOM: 'RANDOM',
  /** Embeddings of tokens drawn at random from the vocabulary. */
  SAMPLE_VOCAB: 'SAMPLE_VOCAB',
  /** Embeddings of `promptTuningInitText`'s tokens, repeated or cut to numVirtualTokens. */
  TEXT: 'TEXT',
} as const;
export type PromptTuningInit = (typeof PromptTuningInit)[keyof typeof PromptTuningInit];

const shape = {
  ...promptLearningConfigShape,
  promptTuningInit: z.enum(['RANDOM', 'SAMPLE_VOCAB', 'TEXT']).default('RANDOM'),
  /** The text whose token embeddings start the prompt (TEXT init). */
  promptTuningInitText: z.string().nullable().default(null),
  /** A local folder with tokenizer.json (TEXT init). */
  tokenizerNameOrPath: z.string().nullable().default(null),
};

/** HF keys peftjs accepts only at their defaults. */
const hfOnlyDefaults = {
  tokenizer_kwargs: null,
};

export type PromptTuningConfigInput = Partial<z.input<z.ZodObject<typeof shape>>> & { numVirtualTokens: number; taskType?: TaskType | null };
type Fields = z.output<z.ZodObject<typeof shape>>;
export interface PromptTuningConfig extends Fields {}

/**
 * HF PEFT's PromptTuningConfig, camelCase:
 * `new PromptTuningConfig({ taskType: TaskType.SEQ_CLS, numVirtualTokens: 8, promptTuningInit: PromptTuningInit.TEXT, promptTuningInitText: 'Is this spam?', tokenizerNameOrPath: dir })`.
 */
export class PromptTuningConfig extends PeftConfig {
  static readonly peftType = 'PROMPT_TUNING';
  static readonly shape = shape;
  static readonly hfOnlyDefaults = hfOnlyDefaults;

  constructor(input: PromptTuningConfigInput) {
    super();
    this.init(input, 'PromptTuningConfig');
  }

  protected override validate(): void {
    if (this.promptTuningInit === 'TEXT') {
      if (!this.tokenizerNameOrPath) throw new PeftError('INVALID_CONFIG', 'PromptTuningConfig: promptTuningInit TEXT needs field "tokenizerNameOrPath" (a folder with tokenizer.json)');
      if (this.promptTuningInitText == null) throw new PeftError('INVALID_CONFIG', 'PromptTuningConfig: promptTuningInit TEXT needs field "promptTuningInitText"');
    }
  }
}
