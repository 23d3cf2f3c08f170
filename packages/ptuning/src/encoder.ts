import * as tf from '@tensorflow/tfjs';
import { Embedding, Linear, Module, ModuleDict, PeftError, checkAllocation, nextSeed, type ReparameterizedPromptEncoder } from '@peftjs/core';

/** Caps on the encoder's sizes (far above any real prompt encoder), checked before anything is allocated. */
export const MAX_VIRTUAL_TOKENS = 1 << 16;
export const MAX_ENCODER_HIDDEN_SIZE = 1 << 16;
export const MAX_ENCODER_LAYERS = 64;

/**
 * torch.nn.LSTM(batch_first, bidirectional) over one sequence, with PyTorch's parameter names
 * (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, and `…_reverse`), gate order i, f, g, o,
 * and dropout between layers in training mode.
 */
export class BiLSTM extends Module {
  constructor(
    readonly inputSize: number,
    readonly hiddenSize: number,
    readonly numLayers: number,
    readonly dropout: number,
  ) {
    super();
    if (!Number.isInteger(numLayers) || numLayers < 1 || numLayers > MAX_ENCODER_LAYERS) {
      throw new PeftError('LIMIT_EXCEEDED', `PromptEncoderConfig: encoder_num_layers ${numLayers} must be an integer from 1 to ${MAX_ENCODER_LAYERS}`);
    }
    for (let k = 0; k < numLayers; k++) checkAllocation([4 * hiddenSize, k === 0 ? inputSize : 2 * hiddenSize], `PromptEncoderConfig: the LSTM's weight_ih_l${k} (encoder_hidden_size ${hiddenSize})`);
    const bound = 1 / Math.sqrt(hiddenSize);
    const u = (shape: number[]) => tf.randomUniform(shape, -bound, bound, 'float32', nextSeed());
    for (let k = 0; k < numLayers; k++) {
      const inK = k === 0 ? inputSize : 2 * hiddenSize;
      for (const sfx of ['', '_reverse']) {
        for (const [name, shape] of [
          [`weight_ih_l${k}${sfx}`, [4 * hiddenSize, inK]],
          [`weight_hh_l${k}${sfx}`, [4 * hiddenSize, hiddenSize]],
          [`bias_ih_l${k}${sfx}`, [4 * hiddenSize]],
          [`bias_hh_l${k}${sfx}`, [4 * hiddenSize]],
        ] as [string, number[]][]) {
          const t = u(shape);
          this.registerParameter(name, t);
          t.dispose();
        }
      }
    }
  }

  private direction(x: tf.Tensor, k: number, sfx: string): tf.Tensor {
    const h = this.hiddenSize;
    const T = x.shape[0] as number;
    // the input projection of every step at once: [T, 4h]
    const xp = tf.add(tf.matMul(x, this.param(`weight_ih_l${k}${sfx}`), false, true), tf.add(this.param(`bias_ih_l${k}${sfx}`), this.param(`bias_hh_l${k}${sfx}`)));
    const whh = this.param(`weight_hh_l${k}${sfx}`);
    let hPrev: tf.Tensor = tf.zeros([1, h]);
    let c: tf.Tensor = tf.zeros([1, h]);
    const outs: tf.Tensor[] = new Array(T);
    const order = sfx ? [...Array(T).keys()].reverse() : [...Array(T).keys()];
    for (const t of order) {
      const gates = tf.add(tf.slice(xp, [t, 0], [1, 4 * h]), tf.matMul(hPrev, whh, false, true));
      const [i, f, g, o] = tf.split(gates, 4, 1);
      c = tf.add(tf.mul(tf.sigmoid(f), c), tf.mul(tf.sigmoid(i), tf.tanh(g)));
      hPrev = tf.mul(tf.sigmoid(o), tf.tanh(c));
      outs[t] = hPrev;
    }
    return tf.concat(outs, 0);
  }

  /** x [T, inputSize] → [T, 2·hiddenSize] (forward and backward outputs side by side). */
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      let y = x;
      for (let k = 0; k < this.numLayers; k++) {
        if (k > 0 && this.training && this.dropout > 0) y = tf.dropout(y, this.dropout, undefined, nextSeed());
        y = tf.concat([this.direction(y, k, ''), this.direction(y, k, '_reverse')], 1);
      }
      return y;
    });
  }
}

export type PromptEncoderKind = 'MLP' | 'LSTM' | 'table';

/**
 * HF's PromptEncoder (P-tuning): `embedding` [nvt, D] through `mlp_head` (MLP: Linear(D, h) → ReLU →
 * Linear(h, h) → ReLU → Linear(h, D)) or through `lstm_head` (bidirectional LSTM(D, h, layers)) and
 * `mlp_head` (Linear(2h, 2h) → ReLU → Linear(2h, D)). In inference (`table`), `embedding` holds the
 * encoder's output, as HF loads it. Parameter names are HF's.
 */
export class PromptEncoder extends Module implements ReparameterizedPromptEncoder {
  kind: PromptEncoderKind;
  constructor(opts: { numVirtualTokens: number; tokenDim: number; hiddenSize: number; kind: PromptEncoderKind; numLayers: number; dropout: number }) {
    super();
    const { numVirtualTokens: n, tokenDim: d, hiddenSize: h } = opts;
    // every size checked before the first tensor is made (a failure half way would leave the rest allocated)
    if (!Number.isInteger(n) || n < 1 || n > MAX_VIRTUAL_TOKENS) {
      throw new PeftError('LIMIT_EXCEEDED', `PromptEncoderConfig: num_virtual_tokens ${n} must be an integer from 1 to ${MAX_VIRTUAL_TOKENS}`);
    }
    if (opts.kind !== 'table' && (!Number.isInteger(h) || h < 1 || h > MAX_ENCODER_HIDDEN_SIZE)) {
      throw new PeftError('LIMIT_EXCEEDED', `PromptEncoderConfig: encoder_hidden_size ${h} must be an integer from 1 to ${MAX_ENCODER_HIDDEN_SIZE}`);
    }
    if (opts.kind === 'LSTM' && (!Number.isInteger(opts.numLayers) || opts.numLayers < 1 || opts.numLayers > MAX_ENCODER_LAYERS)) {
      throw new PeftError('LIMIT_EXCEEDED', `PromptEncoderConfig: encoder_num_layers ${opts.numLayers} must be an integer from 1 to ${MAX_ENCODER_LAYERS}`);
    }
    if (opts.kind === 'LSTM') checkAllocation([4 * h, 2 * h], `PromptEncoderConfig: the LSTM (encoder_hidden_size ${h})`);
    checkAllocation([n, d], `PromptEncoderConfig: the embedding [num_virtual_tokens ${n}, token_dim ${d}]`);
    if (opts.kind !== 'table') checkAllocation([2 * h, 2 * h], `PromptEncoderConfig: the MLP head (encoder_hidden_size ${h})`);
    this.kind = opts.kind;
    this.registerModule('embedding', new Embedding(n, d));
    if (opts.kind === 'MLP') {
      const mlp = this.registerModule('mlp_head', new ModuleDict<Linear>());
      mlp.set('0', new Linear(d, h));
      mlp.set('2', new Linear(h, h));
      mlp.set('4', new Linear(h, d));
    } else if (opts.kind === 'LSTM') {
      this.registerModule('lstm_head', new BiLSTM(d, h, opts.numLayers, opts.dropout));
      const mlp = this.registerModule('mlp_head', new ModuleDict<Linear>());
      mlp.set('0', new Linear(2 * h, 2 * h));
      mlp.set('2', new Linear(2 * h, d));
    }
  }

  /** MLP and LSTM encoders compute the virtual tokens (core's loadPromptEmbeddings / encoderState). */
  get reparameterized(): boolean {
    return this.kind !== 'table';
  }

  get embedding(): Embedding {
    return this.child<Embedding>('embedding');
  }

  /** The virtual-token embeddings [nvt, D] (what HF saves as prompt_embeddings). */
  output(): tf.Tensor {
    const e = this.embedding.weight;
    if (this.kind === 'table') return e;
    const mlp = this.child<ModuleDict<Linear>>('mlp_head');
    return tf.tidy(() => {
      if (this.kind === 'MLP') return mlp.get('4')!.forward(tf.relu(mlp.get('2')!.forward(tf.relu(mlp.get('0')!.forward(e)))));
      const seq = this.child<BiLSTM>('lstm_head').forward(e);
      return mlp.get('2')!.forward(tf.relu(mlp.get('0')!.forward(seq)));
    });
  }

  /** Drops the encoder and keeps `table` as the prompt (HF's inference layout). */
  toTable(table: tf.Tensor): void {
    this.deleteModule('mlp_head')?.dispose();
    this.deleteModule('lstm_head')?.dispose();
    this.embedding.weight.assign(table);
    this.kind = 'table';
  }
}
