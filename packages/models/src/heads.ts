import * as tf from '@tensorflow/tfjs';
import {
  PeftError,
  PreTrainedModel,
  toIdsTensor,
  type Embedding,
  type ForwardFn,
  type ForwardInputs,
  type ForwardOutput,
  type GenerateOptions,
  type IdsLike,
  type KVCache,
  type Module,
} from '@peftjs/core';
import { causalLMLoss, prepareInputs, sub, tokenCrossEntropy, type ModelForwardInputs, type Prepared } from './common';
import type { AnyModelConfig, ClassificationFields } from './config';
import { generateLoop } from './generate';

/** The transformer body of a model (LlamaModel, GPT2Model): inputs → final normed hidden states. */
export interface Backbone extends Module {
  run(p: Prepared, training: boolean): tf.Tensor;
}

/** Token ids from generation_config.json, which HF's generate prefers over config.json. */
export interface GenerationDefaults {
  eosTokenId?: number | number[] | null;
  padTokenId?: number | null;
  bosTokenId?: number | number[] | null;
}

/** What both heads share: the body under its HF name, the input embeddings, and input preparation. */
abstract class HeadModel extends PreTrainedModel {
  abstract override readonly config: AnyModelConfig;
  /** `model` (LLaMA family) or `transformer` (GPT-2). */
  protected abstract readonly backboneName: string;
  /** The child holding the input embeddings, under the body. */
  protected abstract readonly embeddingName: string;
  generationDefaults: GenerationDefaults = {};

  protected backbone(): Backbone {
    return this.child<Backbone>(this.backboneName);
  }

  getInputEmbeddings(): Embedding {
    return this.backbone().child<Embedding>(this.embeddingName);
  }

  protected prepare(inputs: ForwardInputs): Prepared {
    const c = this.config;
    return prepareInputs(inputs, {
      hiddenSize: c.hiddenSize,
      vocabSize: c.vocabSize,
      maxPositions: c.modelType === 'gpt2' ? c.nPositions : undefined,
      slidingWindow: c.modelType === 'gpt2' ? null : c.slidingWindow,
      what: this.constructor.name,
    });
  }

  override dispose(): void {
    super.dispose();
    for (const [, m] of this.namedModules()) (m as { disposeBuffers?: () => void }).disposeBuffers?.();
  }
}

/** A causal LM head over a body: logits [B, T, V] from `lm_head`, HF's shifted cross-entropy loss, generate. */
export abstract class CausalLMBase extends HeadModel {
  readonly outputHeadNames = ['lm_head'];
  readonly taskType = 'CAUSAL_LM';

  /**
   * HF's forward. Position ids default to pastLength + 0..T-1 (not derived from the mask); the mask is
   * [B, pastLength + T]. With `useCache`, keys/values are appended to `pastKeyValues` (a new cache when
   * none is given) and it is returned. The caller owns `logits` and `loss`.
   * With both inputIds and inputsEmbeds, inputsEmbeds is used.
   */
  forward(inputs: ModelForwardInputs): ForwardOutput {
    let cache: KVCache | undefined;
    const [logits, loss] = tf.tidy(() => {
      const p = this.prepare(inputs);
      if (p.store) cache = p.cache;
      let h = this.backbone().run(p, this.training);
      const keep = inputs.logitsToKeep ?? 0;
      if (keep > 0 && keep < p.seqLen) h = tf.slice(h, [0, p.seqLen - keep, 0], [p.batch, keep, h.shape[2] as number]);
      const logits = sub(this, 'lm_head').forward(h);
      if (inputs.labels === undefined) return [logits];
      if (keep > 0 && keep < p.seqLen) throw new PeftError('INVALID_ARGUMENT', `${this.constructor.name}: labels cannot be combined with logitsToKeep`);
      return [logits, causalLMLoss(logits, inputs.labels, this.constructor.name)];
    });
    const out: ForwardOutput = { logits };
    if (loss) out.loss = loss as tf.Scalar;
    if (cache) out.pastKeyValues = cache;
    return out;
  }

  /**
   * Greedy (default) or sampled generation with the KV cache; returns prompt + new ids per row.
   * `forward` replaces this model's forward (PEFT wrappers); it is called with
   * `{ inputIds, attentionMask, positionIds, pastKeyValues, useCache: true }`.
   */
  generate(opts: GenerateOptions, forward?: ForwardFn): Promise<number[][]> {
    return generateLoop(this, opts, forward ?? ((i) => this.forward(i)), !forward);
  }
}

export interface SeqClsForwardInputs extends Omit<ForwardInputs, 'labels'> {
  /** Labels [B] (class ids, or floats for regression), also accepted as [B, 1] / number[] / [B, numLabels] multi-label. */
  labels?: IdsLike | number[];
}

/**
 * HF's *ForSequenceClassification: `score` (hidden → num_labels, no bias) on the hidden state of the
 * last non-pad token of each row. Pooling follows transformers 5: the rightmost position whose input id
 * is not pad_token_id (left and right padding both work); the last position when pad_token_id is null.
 * With inputsEmbeds (prompt tuning prepends virtual tokens), pass `inputIds` too: the pooled position is
 * the rightmost non-pad id shifted by the number of extra leading embeddings; without inputIds the
 * last position is pooled (what HF does for inputs_embeds).
 */
export abstract class SeqClsBase extends HeadModel {
  readonly outputHeadNames = ['score'];
  readonly taskType = 'SEQ_CLS';
  abstract readonly classification: ClassificationFields & { problemTypeExplicit: boolean };

  forward(inputs: SeqClsForwardInputs): ForwardOutput {
    const what = this.constructor.name;
    const [logits, loss] = tf.tidy(() => {
      const { labels, ...rest } = inputs;
      const p = this.prepare(rest);
      const h = this.backbone().run(p, this.training);
      const d = h.shape[2] as number;
      const pad = this.config.padTokenId;
      let pooled: tf.Tensor;
      if (p.ids && pad !== null && pad !== undefined) {
        const [b, ti] = p.ids.shape as number[];
        if (b !== p.batch || ti > p.seqLen) throw new PeftError('INVALID_ARGUMENT', `${what}: inputIds [${p.ids.shape}] do not fit inputsEmbeds [${p.batch}, ${p.seqLen}]`);
        const nonPad = tf.notEqual(p.ids, pad).toInt();
        const last = tf.argMax(tf.mul(tf.range(0, ti, 1, 'int32').reshape([1, ti]), nonPad), -1);
        const idx = ti < p.seqLen ? tf.add(last, tf.scalar(p.seqLen - ti, 'int32')) : last;
        // one-hot select rather than gather (gather's gradient is missing on wasm); int32 one-hot then cast (wasm bug)
        const sel = tf.oneHot(idx, p.seqLen).toFloat().reshape([p.batch, p.seqLen, 1]);
        pooled = tf.sum(tf.mul(h, sel), 1);
      } else {
        pooled = tf.slice(h, [0, p.seqLen - 1, 0], [p.batch, 1, d]).reshape([p.batch, d]);
      }
      // score is per position, so scoring the pooled state equals HF's pooling of the scored sequence
      const logits = sub(this, 'score').forward(pooled);
      if (labels === undefined) return [logits];
      return [logits, this.loss(logits, labels)];
    });
    const out: ForwardOutput = { logits };
    if (loss) out.loss = loss as tf.Scalar;
    return out;
  }

  /** HF's problem types: regression (MSE), single-label (cross-entropy), multi-label (BCE with logits). */
  private loss(logits: tf.Tensor, labels: IdsLike | number[]): tf.Scalar {
    const what = this.constructor.name;
    const [b, n] = logits.shape as number[];
    let lab: tf.Tensor;
    if (labels instanceof tf.Tensor) lab = labels;
    else if (Array.isArray(labels) && labels.every((x) => typeof x === 'number')) lab = tf.tensor1d(labels as number[], 'float32');
    else lab = tf.tensor2d(labels as number[][]);
    let kind = this.classification.problemType;
    if (!this.classification.problemTypeExplicit && n > 1) {
      const multi = lab.dtype === 'float32' && lab.rank === 2 && lab.shape[1] === n && labels instanceof tf.Tensor;
      const multiArr = !(labels instanceof tf.Tensor) && lab.rank === 2 && lab.shape[1] === n;
      kind = multi || multiArr ? 'multi_label_classification' : 'single_label_classification';
    }
    if (kind === 'regression') {
      const y = lab.toFloat().reshape(n === 1 ? [b] : [b, n]);
      const x = n === 1 ? logits.reshape([b]) : logits;
      if (y.size !== x.size) throw new PeftError('INVALID_ARGUMENT', `${what}: regression labels must have ${b * n} values, got [${lab.shape}]`);
      return tf.mean(tf.squaredDifference(x, y)) as tf.Scalar;
    }
    if (kind === 'multi_label_classification') {
      if (lab.rank !== 2 || lab.shape[0] !== b || lab.shape[1] !== n) throw new PeftError('INVALID_ARGUMENT', `${what}: multi-label labels must be [${b}, ${n}], got [${lab.shape}]`);
      return tf.losses.sigmoidCrossEntropy(lab.toFloat(), logits) as tf.Scalar;
    }
    const ids = toIdsTensor(lab.reshape([-1, 1]), 'labels').reshape([-1]);
    if (ids.shape[0] !== b) throw new PeftError('INVALID_ARGUMENT', `${what}: labels must hold one class id per row (${b}), got [${lab.shape}]`);
    return tokenCrossEntropy(logits, ids);
  }

  generate(_opts: GenerateOptions, _forward?: ForwardFn): Promise<number[][]> {
    return Promise.reject(new PeftError('UNSUPPORTED', `${this.constructor.name} classifies sequences; generate needs a causal LM (AutoModelForCausalLM)`));
  }
}
