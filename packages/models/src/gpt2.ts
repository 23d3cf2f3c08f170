import * as tf from '@tensorflow/tfjs';
import { Conv1D, Dropout, Embedding, LayerNorm, Module, ModuleDict, ResidualAdd, checkpoint, isRecordingGradients, nextSeed, type ResidualHook } from '@peftjs/core';
import { ParamSource, TiedLinear, constructScoped, activate, attention, makeLinear, splitHeads, sub, withPast, type AttentionContext, type Prepared } from './common';
import type { ClassificationFields, GPT2Config } from './config';
import { CausalLMBase, SeqClsBase, type Backbone } from './heads';

/** GPT-2's Conv1D (weight [in, out]) with parameters from `src`, or HF's init N(0, std) and zero bias. */
function makeConv1D(src: ParamSource, name: string, inF: number, outF: number, std: number): Conv1D {
  const c = new Conv1D(outF, inF);
  const s = src.scope(name);
  c.registerParameter('weight', s.get('weight', [inF, outF], () => tf.randomNormal([inF, outF], 0, std, 'float32', nextSeed())));
  c.registerParameter('bias', s.get('bias', [outF], () => tf.zeros([outF])));
  return c;
}

function makeEmbedding(src: ParamSource, name: string, n: number, d: number, std: number): Embedding {
  return new Embedding(n, d, src.scope(name).get('weight', [n, d], () => tf.randomNormal([n, d], 0, std, 'float32', nextSeed())));
}

/** HF's GPT2Attention: fused c_attn (q, k, v), c_proj, attention and residual dropout. */
export class GPT2Attention extends Module {
  constructor(
    readonly config: GPT2Config,
    readonly layerIdx: number,
    src: ParamSource,
  ) {
    super();
    const { hiddenSize: d, initializerRange: std, numHiddenLayers: n } = config;
    this.registerModule('c_attn', makeConv1D(src, 'c_attn', d, 3 * d, std));
    // HF scales the init of residual projections by 1/√(2·n_layer)
    this.registerModule('c_proj', makeConv1D(src, 'c_proj', d, d, std / Math.sqrt(2 * n)));
    this.registerModule('attn_dropout', new Dropout(config.attnPdrop));
    this.registerModule('resid_dropout', new Dropout(config.residPdrop));
  }

  forward(x: tf.Tensor, ctx: AttentionContext): tf.Tensor {
    const { hiddenSize: d, numAttentionHeads: h, headDim: hd, scaleAttnWeights, scaleAttnByInverseLayerIdx } = this.config;
    const [q, k, v] = tf.split(sub(this, 'c_attn').forward(x), [d, d, d], 2);
    let scale = scaleAttnWeights ? 1 / Math.sqrt(hd) : 1;
    if (scaleAttnByInverseLayerIdx) scale /= this.layerIdx + 1;
    const qh = tf.mul(splitHeads(q, h, hd), scale);
    const { key, value } = withPast(ctx, this.layerIdx, splitHeads(k, h, hd), splitHeads(v, h, hd));
    const attnDrop = this.child<Dropout>('attn_dropout');
    const drop = attnDrop.training && attnDrop.p > 0 ? (p: tf.Tensor) => attnDrop.forward(p) : undefined;
    return sub(this, 'resid_dropout').forward(sub(this, 'c_proj').forward(attention(qh, key, value, ctx.mask, drop, ctx.rowKeep)));
  }
}

/** HF's GPT2MLP: c_proj(act(c_fc(x))), dropout. */
export class GPT2MLP extends Module {
  constructor(
    readonly config: GPT2Config,
    src: ParamSource,
  ) {
    super();
    const { hiddenSize: d, nInner, initializerRange: std, numHiddenLayers: n } = config;
    this.registerModule('c_fc', makeConv1D(src, 'c_fc', d, nInner, std));
    this.registerModule('c_proj', makeConv1D(src, 'c_proj', nInner, d, std / Math.sqrt(2 * n)));
    this.registerModule('dropout', new Dropout(config.residPdrop));
  }

  forward(x: tf.Tensor): tf.Tensor {
    const h = activate(this.config.activation, sub(this, 'c_fc').forward(x));
    return sub(this, 'dropout').forward(sub(this, 'c_proj').forward(h));
  }
}

export class GPT2Block extends Module {
  constructor(config: GPT2Config, layerIdx: number, src: ParamSource) {
    super();
    const { hiddenSize: d, layerNormEpsilon: eps } = config;
    this.registerModule('ln_1', new LayerNorm(d, eps));
    this.registerModule('attn', new GPT2Attention(config, layerIdx, src.scope('attn')));
    this.registerModule('ln_2', new LayerNorm(d, eps));
    this.registerModule('mlp', new GPT2MLP(config, src.scope('mlp')));
    // the two residual connections as modules (AdapterHub's names): bottleneck adapters replace them
    this.registerModule('attention_adapters', new ResidualAdd());
    this.registerModule('output_adapters', new ResidualAdd());
  }

  /** Recompute this block's activations in backward instead of keeping them (gradientCheckpointingEnable). */
  gradientCheckpointing = false;

  forward(x: tf.Tensor, ctx: AttentionContext): tf.Tensor {
    // a cache (generation, or prefix tuning's trainable past) is read by attention: no checkpointing there
    if (!this.gradientCheckpointing || !ctx.training || ctx.cache || !isRecordingGradients()) return this.blockForward(x, ctx);
    const { mask, rowKeep } = ctx;
    const consts = [...(mask ? [mask] : []), ...(rowKeep ? [rowKeep] : [])];
    return checkpoint(
      (h, ...rest) => this.blockForward(h, { ...ctx, mask: mask ? rest[0] : null, rowKeep: rowKeep ? rest[mask ? 1 : 0] : null }),
      [x],
      this.trainableParameters(),
      consts,
    );
  }

  private blockForward(x: tf.Tensor, ctx: AttentionContext): tf.Tensor {
    const attn = this.child<GPT2Attention>('attn').forward(sub(this, 'ln_1').forward(x), ctx);
    const h = this.child<Module & ResidualHook>('attention_adapters').addResidual(attn, x);
    return this.child<Module & ResidualHook>('output_adapters').addResidual(this.child<GPT2MLP>('mlp').forward(sub(this, 'ln_2').forward(h)), h);
  }
}

/** HF's GPT2Model: wte, wpe, drop, h.N, ln_f. */
export class GPT2Model extends Module implements Backbone {
  constructor(
    readonly config: GPT2Config,
    src: ParamSource,
  ) {
    super();
    const { vocabSize: v, hiddenSize: d, nPositions, numHiddenLayers: n, initializerRange: std } = config;
    this.registerModule('wte', makeEmbedding(src, 'wte', v, d, std));
    this.registerModule('wpe', makeEmbedding(src, 'wpe', nPositions, d, std));
    this.registerModule('drop', new Dropout(config.embdPdrop));
    const h = this.registerModule('h', new ModuleDict<GPT2Block>());
    for (let i = 0; i < n; i++) h.set(String(i), new GPT2Block(config, i, src.scope(`h.${i}`)));
    this.registerModule('ln_f', new LayerNorm(d, config.layerNormEpsilon));
  }

  run(p: Prepared, training: boolean): tf.Tensor {
    const pos = p.positionIds ?? tf.range(p.pastLength, p.pastLength + p.seqLen, 1, 'int32').reshape([1, p.seqLen]);
    const tok = p.embeds ?? this.child<Embedding>('wte').forward(p.ids!);
    let x = sub(this, 'drop').forward(tf.add(tok, this.child<Embedding>('wpe').forward(pos)));
    const ctx: AttentionContext = { mask: p.mask, rowKeep: p.rowKeep, cache: p.cache, store: p.store, training };
    const blocks = this.child('h');
    for (let i = 0; i < this.config.numHiddenLayers; i++) x = blocks.child<GPT2Block>(String(i)).forward(x, ctx);
    return sub(this, 'ln_f').forward(x);
  }
}

/** HF's GPT2LMHeadModel: `transformer` + `lm_head` tied to wte (unless tie_word_embeddings is false). */
export class GPT2LMHeadModel extends CausalLMBase {
  readonly config: GPT2Config;
  protected readonly backboneName = 'transformer';
  protected readonly embeddingName = 'wte';

  constructor(config: GPT2Config, src: ParamSource = new ParamSource(undefined)) {
    super();
    this.config = config;
    constructScoped(() => {
      const t = this.registerModule('transformer', new GPT2Model(config, src.scope('transformer')));
      this.registerModule(
        'lm_head',
        config.tieWordEmbeddings
          ? new TiedLinear(t.child<Embedding>('wte').weight)
          : makeLinear(src, 'lm_head', config.hiddenSize, config.vocabSize, false, config.initializerRange),
      );
    });
    src.release();
  }
}

/** HF's GPT2ForSequenceClassification: `transformer` + `score` (no bias). */
export class GPT2ForSequenceClassification extends SeqClsBase {
  readonly config: GPT2Config;
  readonly classification: ClassificationFields & { problemTypeExplicit: boolean };
  protected readonly backboneName = 'transformer';
  protected readonly embeddingName = 'wte';

  constructor(config: GPT2Config, classification: ClassificationFields & { problemTypeExplicit: boolean }, src: ParamSource = new ParamSource(undefined)) {
    super();
    this.config = config;
    this.classification = classification;
    constructScoped(() => {
      this.registerModule('transformer', new GPT2Model(config, src.scope('transformer')));
      this.registerModule('score', makeLinear(src, 'score', config.hiddenSize, classification.numLabels, false, config.initializerRange));
    });
    src.release();
  }
}
