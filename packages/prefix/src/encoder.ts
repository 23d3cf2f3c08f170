import * as tf from '@tensorflow/tfjs';
import { Embedding, Linear, Module, ModuleDict, nextSeed, type ReparameterizedPromptEncoder } from '@peftjs/core';

/**
 * HF's PrefixEncoder. Without projection (or for inference) `embedding` [nvt, 2·L·D] is the prefix
 * itself; with projection `embedding` [nvt, D] → `transform.0` Linear(D, h) → tanh → `transform.2`
 * Linear(h, 2·L·D). Parameter names are HF's, so `prompt_encoder.<adapter>.…` matches its state dict.
 */
export class PrefixEncoder extends Module implements ReparameterizedPromptEncoder {
  constructor(opts: { numVirtualTokens: number; tokenDim: number; numLayers: number; encoderHiddenSize: number; projection: boolean; zeroInit: boolean }) {
    super();
    const { numVirtualTokens: n, tokenDim: d, numLayers: l, encoderHiddenSize: h } = opts;
    const out = 2 * l * d;
    if (opts.projection) {
      this.registerModule('embedding', new Embedding(n, d));
      const transform = this.registerModule('transform', new ModuleDict<Linear>());
      transform.set('0', new Linear(d, h));
      transform.set('2', new Linear(h, out));
      if (opts.zeroInit) for (const p of transform.get('2')!.parameters()) tf.tidy(() => p.assign(tf.zerosLike(p)));
    } else {
      const w = opts.zeroInit ? tf.zeros([n, out]) : tf.randomNormal([n, out], 0, 1, 'float32', nextSeed());
      this.registerModule('embedding', new Embedding(n, out, w));
      w.dispose();
    }
  }

  get projection(): boolean {
    return this.maybeChild('transform') !== undefined;
  }

  /** With projection the prefix is computed (core's loadPromptEmbeddings / encoderState). */
  get reparameterized(): boolean {
    return this.projection;
  }

  get embedding(): Embedding {
    return this.child<Embedding>('embedding');
  }

  /** The flat prefix [nvt, 2·L·D] (what HF saves as prompt_embeddings). */
  output(): tf.Tensor {
    const e = this.embedding.weight;
    if (!this.projection) return e;
    const t = this.child<ModuleDict<Linear>>('transform');
    return tf.tidy(() => t.get('2')!.forward(tf.tanh(t.get('0')!.forward(e))));
  }

  /** Drops the projection and keeps `table` as the prefix (HF's inference layout). */
  toTable(table: tf.Tensor): void {
    this.deleteModule('transform')?.dispose();
    this.deleteModule('embedding')?.dispose();
    const [n, w] = table.shape as number[];
    this.registerModule('embedding', new Embedding(n, w, table));
  }
}
