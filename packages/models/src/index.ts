export { AutoModelForCausalLM, AutoModelForSequenceClassification, type FromPretrainedOptions, type SeqClsFromPretrainedOptions, estimateParameters } from './auto';
export { AutoTokenizer, PreTrainedTokenizer, type BatchEncodeOptions, type BatchEncoding, type DecodeOptions, type EncodeOptions, type PaddingSide } from './tokenizer';
export { CausalLMBase, SeqClsBase, type Backbone, type GenerationDefaults, type SeqClsForwardInputs } from './heads';
export { LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel, LlamaDecoderLayer, LlamaAttention, LlamaMLP } from './llama';
export { GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2Model, GPT2Block, GPT2Attention, GPT2MLP } from './gpt2';
export {
  parseModelConfig,
  parseClassificationFields,
  SUPPORTED_MODEL_TYPES,
  LLAMA_FAMILY,
  MODEL_CONFIG_CAPS,
  type SupportedModelType,
  type AnyModelConfig,
  type LlamaConfig,
  type GPT2Config,
  type RopeSpec,
  type Activation,
  type ClassificationFields,
} from './config';
export { MASK_MIN, ParamSource, TiedLinear, attention, attentionOp, causalLMLoss, tokenCrossEntropy, setAttentionCustomGrad, type ModelForwardInputs } from './common';
export { RopeTables, applyRope, ropeInvFreq, ropeOp } from './rope';
export { flashSupports, MAX_HEAD_DIM as FLASH_MAX_HEAD_DIM } from './kernels/flash_attention';
export { sampleToken, positionsFromMask } from './generate';
export { swigluOp, crossEntropyOp } from './ops';
