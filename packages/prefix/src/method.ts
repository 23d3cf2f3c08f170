import { PEFT_METHOD_SPEC_VERSION, PeftError, encoderState, forwardWithPrefix, loadPromptEmbeddings, preparePromptLearningConfig, splitPrefix, type PromptLearningMethod } from '@peftjs/core';
import { PrefixTuningConfig } from './config';
import { PrefixEncoder } from './encoder';

export const prefixTuningMethod: PromptLearningMethod<PrefixTuningConfig, PrefixEncoder> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'PREFIX_TUNING',
  prefix: 'prefix_tuning_',
  kind: 'prompt-learning',
  configClass: PrefixTuningConfig,
  cannotMergeReason: 'prefix tuning feeds learned past keys/values to every attention layer; there is no weight to merge them into (keep the adapter, or use LoRA/IA3 to merge)',

  prepareConfig(config, model) {
    return preparePromptLearningConfig(config, model, { prefix: true });
  },

  createEncoder(model, config) {
    const kvWidth = model.config.numKeyValueHeads * model.config.headDim;
    if (config.tokenDim !== kvWidth || config.numLayers !== model.config.numHiddenLayers) {
      throw new PeftError(
        'INVALID_CONFIG',
        `PrefixTuningConfig: token_dim ${config.tokenDim} × num_layers ${config.numLayers} does not fit this model's keys/values (${kvWidth} per layer × ${model.config.numHiddenLayers} layers)`,
      );
    }
    return new PrefixEncoder({
      numVirtualTokens: config.numVirtualTokens,
      tokenDim: config.tokenDim!,
      numLayers: config.numLayers!,
      encoderHiddenSize: config.encoderHiddenSize ?? config.tokenDim!,
      // HF builds only the table in inference mode: the file holds the projection's output
      projection: config.prefixProjection && !config.inferenceMode,
      zeroInit: config.initWeights === 'zero',
    });
  },
  saveTensors(encoder) {
    const out = encoder.output();
    return { prompt_embeddings: encoder.projection ? out : out.clone() };
  },
  saveEncoderState: encoderState,
  loadTensors(encoder, tensors, config, source, state) {
    const expected = [config.numVirtualTokens, 2 * config.numLayers! * config.tokenDim!];
    return loadPromptEmbeddings(encoder, tensors, { source, method: 'prefix tuning', expected, dims: 'num_virtual_tokens × 2·num_layers·token_dim', state });
  },
  forward({ model, encoder, config, inputs }) {
    return forwardWithPrefix(model, inputs, config.numVirtualTokens, (batch) => splitPrefix(encoder.output(), batch, config.numLayers!, config.numAttentionHeads!));
  },
};
