import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { PreTrainedModel, type ForwardOutput, type ModelConfig } from './model';
import { Conv1D, Embedding, Linear, RMSNorm } from './nn/layers';
import { Module } from './nn/module';
import { TaskType } from './config';
import { SEQ_CLS_HEADS, allLinearTargets, isOutputHead, outputHeads } from './heads';

/** A module tree with linear layers of both kinds, an embedding, a norm, an LM head and a classifier head. */
class Tree extends PreTrainedModel {
  readonly config = { modelType: 'tree' } as ModelConfig;
  readonly outputHeadNames = ['lm_head'];
  readonly taskType = 'CAUSAL_LM';
  constructor() {
    super();
    const block = new Module();
    block.registerModule('q_proj', new Linear(4, 4));
    block.registerModule('c_attn', new Conv1D(12, 4));
    block.registerModule('norm', new RMSNorm(4));
    const layers = new Module();
    layers.registerModule('0', block);
    const inner = new Module();
    inner.registerModule('embed_tokens', new Embedding(10, 4));
    inner.registerModule('layers', layers);
    inner.registerModule('score', new Linear(4, 2)); // nested classifier head: excluded by its last part
    this.registerModule('model', inner);
    this.registerModule('lm_head', new Linear(4, 10));
  }
  getInputEmbeddings(): Embedding {
    return this.getSubmodule<Embedding>('model.embed_tokens');
  }
  forward(): ForwardOutput {
    throw new Error('not used');
  }
  async generate(): Promise<number[][]> {
    throw new Error('not used');
  }
}

describe('output heads and all-linear', () => {
  it("SEQ_CLS_HEADS are HF's classifier_module_names, in HF's order", () => {
    expect(SEQ_CLS_HEADS).toEqual(['classifier', 'score']);
  });

  it('outputHeads: the model’s heads, plus the classifier heads for SEQ_CLS only', () => {
    const m = new Tree();
    expect([...outputHeads(m, TaskType.CAUSAL_LM)]).toEqual(['lm_head']);
    expect([...outputHeads(m, null)]).toEqual(['lm_head']);
    expect([...outputHeads(m, TaskType.SEQ_CLS)].sort()).toEqual(['classifier', 'lm_head', 'score']);
    const heads = outputHeads(m, TaskType.SEQ_CLS);
    expect(isOutputHead('model.score', heads)).toBe(true);
    expect(isOutputHead('score', heads)).toBe(true);
    expect(isOutputHead('model.scores', heads)).toBe(false);
    expect(isOutputHead('model.layers.0.q_proj', heads)).toBe(false);
    tf.dispose(m.parameters().map((p) => p as tf.Tensor));
  });

  it('allLinearTargets: every Linear and Conv1D by full name, never a head, an embedding or a norm', () => {
    const m = new Tree();
    expect(allLinearTargets(m, TaskType.CAUSAL_LM)).toEqual(['model.layers.0.q_proj', 'model.layers.0.c_attn', 'model.score']);
    expect(allLinearTargets(m, TaskType.SEQ_CLS)).toEqual(['model.layers.0.q_proj', 'model.layers.0.c_attn']);
    tf.dispose(m.parameters().map((p) => p as tf.Tensor));
  });
});
