import { PEFT_METHOD_SPEC_VERSION, PeftError, encoderState, forwardWithVirtualTokens, loadPromptEmbeddings, preparePromptLearningConfig, type PromptLearningMethod } from '@peftjs/core';
import { PromptEncoderConfig } from './config';
import { PromptEncoder } from './encoder';

export const pTuningMethod: PromptLearningMethod<PromptEncoderConfig, PromptEncoder> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'P_TUNING',
  prefix: 'p_tuning_',
  kind: 'prompt-learning',
  configClass: PromptEncoderConfig,
  cannotMergeReason: 'P-tuning prepends virtual-token embeddings made by its prompt encoder to the input; there is no weight to merge them into (keep the adapter, or use LoRA/IA3 to merge)',

  prepareConfig(config, model) {
    return preparePromptLearningConfig(config, model);
  },

  createEncoder(model, config) {
    if (config.tokenDim !== model.config.hiddenSize) {
      throw new PeftError('INVALID_CONFIG', `PromptEncoderConfig: token_dim ${config.tokenDim} is not the model's hidden size ${model.config.hiddenSize}`);
    }
    return new PromptEncoder({
      numVirtualTokens: config.numVirtualTokens * (config.numTransformerSubmodules ?? 1),
      tokenDim: config.tokenDim,
      hiddenSize: config.encoderHiddenSize ?? config.tokenDim,
      // HF builds only the table in inference mode: the file holds the encoder's output
      kind: config.inferenceMode ? 'table' : config.encoderReparameterizationType,
      numLayers: config.encoderNumLayers,
      dropout: config.encoderDropout,
    });
  },
  saveTensors(encoder) {
    const out = encoder.output();
    return { prompt_embeddings: encoder.kind === 'table' ? out.clone() : out };
  },
  saveEncoderState: encoderState,
  loadTensors(encoder, tensors, _config, source, state) {
    const expected = encoder.embedding.weight.shape;
    return loadPromptEmbeddings(encoder, tensors, { source, method: 'P-tuning', expected, dims: 'num_virtual_tokens × token_dim', state });
  },
  forward({ model, encoder, config, inputs }) {
    return forwardWithVirtualTokens(model, inputs, config.numVirtualTokens, () => encoder.output());
  },
};
