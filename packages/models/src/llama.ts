import * as tf from '@tensorflow/tfjs';
import { Embedding, Module, ModuleDict, RMSNorm, ResidualAdd, checkpoint, isRecordingGradients, nextSeed, type ResidualHook } from '@peftjs/core';
import {
  ParamSource,
  constructScoped,
  TiedLinear,
  activate,
  attention,
  attentionTokenMajor,
  makeLinear,
  ropeDecodeAttention,
  splitHeads,
  sub,
  tokenMajorAttention,
  withPast,
  type AttentionContext,
  type Prepared,
} from './common';
import type { ClassificationFields, LlamaConfig } from './config';
import { CausalLMBase, SeqClsBase, type Backbone } from './heads';
import { RopeTables, applyRope } from './rope';
import { swigluOp } from './ops';
import { addRmsNorm, decodeFusionsActive, swigluMatvec } from './kernels/decode_fused';

/** Per-forward context of the LLaMA layers: the mask plus RoPE tables (q's pre-scaled by 1/√head_dim). */
interface LlamaContext extends AttentionContext {
  cos: tf.Tensor;
  sin: tf.Tensor;
  cosQ: tf.Tensor;
  sinQ: tf.Tensor;
}

/** An RMSNorm (weight starts at ones; loadStateDict assigns the checkpoint's). */
function rmsNorm(dim: number, eps: number): RMSNorm {
  return new RMSNorm(dim, eps);
}

/** HF's LlamaAttention (also Mistral's and Qwen2's): q/k/v/o projections, RoPE, grouped-query attention. */
export class LlamaAttention extends Module {
  constructor(
    readonly config: LlamaConfig,
    readonly layerIdx: number,
    src: ParamSource,
  ) {
    super();
    const { hiddenSize: d, numAttentionHeads: h, numKeyValueHeads: kv, headDim: hd, qkvBias, oBias, initializerRange: std } = config;
    this.registerModule('q_proj', makeLinear(src, 'q_proj', d, h * hd, qkvBias, std));
    this.registerModule('k_proj', makeLinear(src, 'k_proj', d, kv * hd, qkvBias, std));
    this.registerModule('v_proj', makeLinear(src, 'v_proj', d, kv * hd, qkvBias, std));
    this.registerModule('o_proj', makeLinear(src, 'o_proj', h * hd, d, oBias, std));
  }

  forward(x: tf.Tensor, ctx: LlamaContext): tf.Tensor {
    const { numAttentionHeads: h, numKeyValueHeads: kv, headDim: hd, attentionDropout } = this.config;
    const drop = ctx.training && attentionDropout > 0 ? (p: tf.Tensor) => tf.dropout(p, attentionDropout, undefined, nextSeed()) : undefined;
    if (!ctx.cache && tokenMajorAttention(ctx.mask, h, kv, hd, drop)) {
      // webgpu flash attention without a past: q/k/v stay in the projections' [B, T, heads, hd] layout
      // (no head transposes), RoPE on that layout with the tables viewed as [1|B, T, 1, hd]
      const [b, t] = x.shape as number[];
      const tm = (c: tf.Tensor) => c.reshape([c.shape[0], t, 1, hd]);
      const q = applyRope(sub(this, 'q_proj').forward(x).reshape([b, t, h, hd]), tm(ctx.cosQ), tm(ctx.sinQ));
      const k = applyRope(sub(this, 'k_proj').forward(x).reshape([b, t, kv, hd]), tm(ctx.cos), tm(ctx.sin));
      const v = sub(this, 'v_proj').forward(x).reshape([b, t, kv, hd]);
      return sub(this, 'o_proj').forward(attentionTokenMajor(q, k, v, ctx.mask));
    }
    const qh = splitHeads(sub(this, 'q_proj').forward(x), h, hd);
    const kh = splitHeads(sub(this, 'k_proj').forward(x), kv, hd);
    const v = splitHeads(sub(this, 'v_proj').forward(x), kv, hd);
    // a webgpu decode step on a KV slab: RoPE, attention and the cache append in one dispatch
    const fused = ropeDecodeAttention(ctx, this.layerIdx, qh, kh, v, ctx, drop);
    if (fused) return sub(this, 'o_proj').forward(fused);
    const q = applyRope(qh, ctx.cosQ, ctx.sinQ);
    const k = applyRope(kh, ctx.cos, ctx.sin);
    const { key, value } = withPast(ctx, this.layerIdx, k, v);
    return sub(this, 'o_proj').forward(attention(q, key, value, ctx.mask, drop, ctx.rowKeep));
  }
}

/** HF's LlamaMLP: down_proj(act(gate_proj(x)) · up_proj(x)). */
export class LlamaMLP extends Module {
  constructor(
    readonly config: LlamaConfig,
    src: ParamSource,
  ) {
    super();
    const { hiddenSize: d, intermediateSize: i, mlpBias, initializerRange: std } = config;
    this.registerModule('gate_proj', makeLinear(src, 'gate_proj', d, i, mlpBias, std));
    this.registerModule('up_proj', makeLinear(src, 'up_proj', d, i, mlpBias, std));
    this.registerModule('down_proj', makeLinear(src, 'down_proj', i, d, mlpBias, std));
  }

  forward(x: tf.Tensor): tf.Tensor {
    if (this.config.hiddenAct === 'silu' && decodeFusionsActive()) {
      // inference on webgpu, a few rows: gate, up and SwiGLU in one dispatch (plain layers only)
      const act = swigluMatvec(x, this.child('gate_proj'), this.child('up_proj'));
      if (act) return sub(this, 'down_proj').forward(act);
    }
    const gateOut = sub(this, 'gate_proj').forward(x);
    if (this.config.hiddenAct === 'silu') {
      // peftjs.SwiGLU: silu(gate)·up, one WGSL dispatch on webgpu (the same tfjs composition elsewhere)
      return sub(this, 'down_proj').forward(swigluOp({ gate: gateOut, up: sub(this, 'up_proj').forward(x) }, {}));
    }
    const gate = activate(this.config.hiddenAct, gateOut);
    return sub(this, 'down_proj').forward(tf.mul(gate, sub(this, 'up_proj').forward(x)));
  }
}

export class LlamaDecoderLayer extends Module {
  constructor(config: LlamaConfig, layerIdx: number, src: ParamSource) {
    super();
    this.registerModule('self_attn', new LlamaAttention(config, layerIdx, src.scope('self_attn')));
    this.registerModule('mlp', new LlamaMLP(config, src.scope('mlp')));
    this.registerModule('input_layernorm', rmsNorm(config.hiddenSize, config.rmsNormEps));
    this.registerModule('post_attention_layernorm', rmsNorm(config.hiddenSize, config.rmsNormEps));
    // the two residual connections as modules (AdapterHub's names): bottleneck adapters replace them
    this.registerModule('attention_adapters', new ResidualAdd());
    this.registerModule('output_adapters', new ResidualAdd());
  }

  /** Recompute this layer's activations in backward instead of keeping them (gradientCheckpointingEnable). */
  gradientCheckpointing = false;

  forward(x: tf.Tensor, ctx: LlamaContext): tf.Tensor {
    // a cache (generation, or prefix tuning's trainable past) is read by attention: no checkpointing there
    if (!this.gradientCheckpointing || !ctx.training || ctx.cache || !isRecordingGradients()) return this.layerForward(x, ctx);
    const { cos, sin, cosQ, sinQ, mask, rowKeep } = ctx;
    const consts = [cos, sin, cosQ, sinQ, ...(mask ? [mask] : []), ...(rowKeep ? [rowKeep] : [])];
    return checkpoint(
      (h, c, s, cq, sq, ...rest) => this.layerForward(h, { ...ctx, cos: c, sin: s, cosQ: cq, sinQ: sq, mask: mask ? rest[0] : null, rowKeep: rowKeep ? rest[mask ? 1 : 0] : null }),
      [x],
      this.trainableParameters(),
      consts,
    );
  }

  private layerForward(x: tf.Tensor, ctx: LlamaContext): tf.Tensor {
    const attn = this.child<LlamaAttention>('self_attn').forward(sub(this, 'input_layernorm').forward(x), ctx);
    const out = this.child<Module & ResidualHook>('output_adapters');
    if (decodeFusionsActive() && this.child('attention_adapters') instanceof ResidualAdd) {
      // inference on webgpu: the residual add and the post-attention norm in one dispatch
      const fused = addRmsNorm(x, attn, this.child('post_attention_layernorm'));
      if (fused) return out.addResidual(this.child<LlamaMLP>('mlp').forward(fused[1]), fused[0]);
    }
    const h = this.child<Module & ResidualHook>('attention_adapters').addResidual(attn, x);
    return out.addResidual(this.child<LlamaMLP>('mlp').forward(sub(this, 'post_attention_layernorm').forward(h)), h);
  }
}

/** HF's LlamaModel: embed_tokens, layers.N, norm. RoPE tables are cached across forwards (not parameters). */
export class LlamaModel extends Module implements Backbone {
  private readonly rope: RopeTables;
  constructor(
    readonly config: LlamaConfig,
    src: ParamSource,
  ) {
    super();
    const { vocabSize: v, hiddenSize: d, numHiddenLayers: n, initializerRange: std } = config;
    const embed = src.scope('embed_tokens').get('weight', [v, d], () => tf.randomNormal([v, d], 0, std, 'float32', nextSeed()));
    this.registerModule('embed_tokens', new Embedding(v, d, embed));
    const layers = this.registerModule('layers', new ModuleDict<LlamaDecoderLayer>());
    for (let i = 0; i < n; i++) layers.set(String(i), new LlamaDecoderLayer(config, i, src.scope(`layers.${i}`)));
    this.registerModule('norm', rmsNorm(d, config.rmsNormEps));
    this.rope = new RopeTables(config.rope, config.headDim, Math.min(config.maxPositionEmbeddings, 2048));
  }

  run(p: Prepared, training: boolean): tf.Tensor {
    let h = p.embeds ?? this.child<Embedding>('embed_tokens').forward(p.ids!);
    const { cos, sin } = p.positionIds ? this.rope.fromIds(p.positionIds) : this.rope.range(p.pastLength, p.seqLen);
    const scale = 1 / Math.sqrt(this.config.headDim);
    const ctx: LlamaContext = {
      mask: p.mask,
      rowKeep: p.rowKeep,
      cache: p.cache,
      store: p.store,
      training,
      cos,
      sin,
      cosQ: tf.mul(cos, scale),
      sinQ: tf.mul(sin, scale),
    };
    const layers = this.child('layers');
    for (let i = 0; i < this.config.numHiddenLayers; i++) h = layers.child<LlamaDecoderLayer>(String(i)).forward(h, ctx);
    return sub(this, 'norm').forward(h);
  }

  disposeBuffers(): void {
    this.rope.dispose();
  }
}

/** HF's LlamaForCausalLM, also MistralForCausalLM and Qwen2ForCausalLM (config.modelType says which). */
export class LlamaForCausalLM extends CausalLMBase {
  readonly config: LlamaConfig;
  protected readonly backboneName = 'model';
  protected readonly embeddingName = 'embed_tokens';

  /** Builds the model; parameters come from `src` (a loaded state dict) or a fresh HF-style init. */
  constructor(config: LlamaConfig, src: ParamSource = new ParamSource(undefined)) {
    super();
    this.config = config;
    constructScoped(() => {
      const model = this.registerModule('model', new LlamaModel(config, src.scope('model')));
      const { hiddenSize: d, vocabSize: v } = config;
      this.registerModule(
        'lm_head',
        config.tieWordEmbeddings ? new TiedLinear(model.child<Embedding>('embed_tokens').weight) : makeLinear(src, 'lm_head', d, v, false, config.initializerRange),
      );
    });
    src.release();
  }
}

/** HF's LlamaForSequenceClassification (and Mistral's, Qwen2's): `model` + `score` (no bias). */
export class LlamaForSequenceClassification extends SeqClsBase {
  readonly config: LlamaConfig;
  readonly classification: ClassificationFields & { problemTypeExplicit: boolean };
  protected readonly backboneName = 'model';
  protected readonly embeddingName = 'embed_tokens';

  constructor(config: LlamaConfig, classification: ClassificationFields & { problemTypeExplicit: boolean }, src: ParamSource = new ParamSource(undefined)) {
    super();
    this.config = config;
    this.classification = classification;
    constructScoped(() => {
      this.registerModule('model', new LlamaModel(config, src.scope('model')));
      this.registerModule('score', makeLinear(src, 'score', config.hiddenSize, classification.numLabels, false, config.initializerRange));
    });
    src.release();
  }
}
