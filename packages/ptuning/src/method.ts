import * as tf from '@tensorflow/tfjs';
import { PEFT_METHOD_SPEC_VERSION, PeftError, assertEncoderReproduces, forwardWithVirtualTokens, preparePromptLearningConfig, type PeftMethod } from '@peftjs/core';
import { PromptEncoderConfig } from './config';
import { PromptEncoder } from './encoder';

export const pTuningMethod: PeftMethod<PromptEncoderConfig> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'P_TUNING',
  prefix: 'p_tuning_',
  kind: 'prompt-learning',
  configClass: PromptEncoderConfig,
  cannotMergeReason: 'P-tuning prepends virtual-token embeddings made by its prompt encoder to the input; there is no weight to merge them into (keep the adapter, or use LoRA/IA3 to merge)',

  prepareConfig(config, model) {
    return preparePromptLearningConfig(config, model);
  },

  promptLearning: {
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
      const e = encoder as PromptEncoder;
      const out = e.output();
      return { prompt_embeddings: e.kind === 'table' ? out.clone() : out };
    },
    saveEncoderState(encoder) {
      return (encoder as PromptEncoder).state();
    },
    loadTensors(encoder, tensors, config, source, encoderState) {
      const e = encoder as PromptEncoder;
      const t = tensors.prompt_embeddings;
      if (!t) throw new PeftError('INVALID_FILE', `${source}: no "prompt_embeddings" tensor (a P-tuning adapter saves one)`);
      const w = e.embedding.weight;
      if (!tf.util.arraysEqual(t.shape, w.shape)) {
        throw new PeftError('SHAPE_MISMATCH', `${source}: tensor "prompt_embeddings" has shape [${t.shape}] but this model needs [${w.shape}] (num_virtual_tokens × token_dim)`);
      }
      if (e.kind !== 'table' && encoderState) {
        e.loadState(encoderState, source.replace(/adapter_model\.safetensors$/, 'peftjs_prompt_encoder.safetensors'));
        const out = e.output();
        return assertEncoderReproduces(out, t, source).finally(() => out.dispose());
      }
      if (e.kind !== 'table') {
        console.warn(
          `${source}: P-tuning, trainable, but no peftjs_prompt_encoder.safetensors beside it (HF saves only the encoder's output); training continues on the saved virtual tokens directly`,
        );
      }
      tf.tidy(() => e.toTable(t.toFloat()));
    },
    forward({ model, encoder, config, inputs }) {
      return forwardWithVirtualTokens(model, inputs, config.numVirtualTokens, () => (encoder as PromptEncoder).output());
    },
  },
};
