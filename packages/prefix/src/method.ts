import * as tf from '@tensorflow/tfjs';
import { PEFT_METHOD_SPEC_VERSION, PeftError, assertEncoderReproduces, forwardWithPrefix, preparePromptLearningConfig, splitPrefix, type PeftMethod } from '@peftjs/core';
import { PrefixTuningConfig } from './config';
import { PrefixEncoder } from './encoder';

export const prefixTuningMethod: PeftMethod<PrefixTuningConfig> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  peftType: 'PREFIX_TUNING',
  prefix: 'prefix_tuning_',
  kind: 'prompt-learning',
  configClass: PrefixTuningConfig,
  cannotMergeReason: 'prefix tuning feeds learned past keys/values to every attention layer; there is no weight to merge them into (keep the adapter, or use LoRA/IA3 to merge)',

  prepareConfig(config, model) {
    return preparePromptLearningConfig(config, model, { prefix: true });
  },

  promptLearning: {
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
      const e = encoder as PrefixEncoder;
      const out = e.output();
      return { prompt_embeddings: e.projection ? out : out.clone() };
    },
    saveEncoderState(encoder) {
      return (encoder as PrefixEncoder).state();
    },
    loadTensors(encoder, tensors, config, source, encoderState) {
      const e = encoder as PrefixEncoder;
      const t = tensors.prompt_embeddings;
      if (!t) throw new PeftError('INVALID_FILE', `${source}: no "prompt_embeddings" tensor (a prefix-tuning adapter saves one)`);
      const want = [config.numVirtualTokens, 2 * config.numLayers! * config.tokenDim!];
      if (!tf.util.arraysEqual(t.shape, want)) {
        throw new PeftError('SHAPE_MISMATCH', `${source}: tensor "prompt_embeddings" has shape [${t.shape}] but this model needs [${want}] (num_virtual_tokens × 2·num_layers·token_dim)`);
      }
      if (e.projection && encoderState) {
        e.loadState(encoderState, source.replace(/adapter_model\.safetensors$/, 'peftjs_prompt_encoder.safetensors'));
        const out = e.output();
        return assertEncoderReproduces(out, t, source).finally(() => out.dispose());
      }
      if (e.projection) {
        console.warn(
          `${source}: prefix tuning with projection, trainable, but no peftjs_prompt_encoder.safetensors beside it (HF saves only the projection's output); training continues on the saved prefix directly`,
        );
        tf.tidy(() => e.toTable(t.toFloat()));
        return;
      }
      tf.tidy(() => e.embedding.weight.assign(t.toFloat()));
    },
    forward({ model, encoder, config, inputs }) {
      const e = encoder as PrefixEncoder;
      return forwardWithPrefix(model, inputs, config.numVirtualTokens, (batch) => splitPrefix(e.output(), batch, config.numLayers!, config.numAttentionHeads!));
    },
  },
};
