import * as tf from '@tensorflow/tfjs';
import { Module, type Layer } from './module';
import { PeftError } from '../errors';
import { linearOp, linear2d } from '../kernels/ops';
import { rmsNormOp } from '../kernels/webgpu/norm';
import { nextSeed } from './random';

/** The most elements one tensor made by peftjs may have (a typed array's limit; 8 GiB of float32). */
export const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;
/** On wasm, what all tensors together may hold (its memory is 32-bit: 4 GiB), and one new tensor. */
const WASM_MAX_BYTES = 2 ** 32 - 2 ** 28;
const WASM_MAX_TENSOR_BYTES = 2 ** 30;

/**
 * Throws LIMIT_EXCEEDED (INVALID_ARGUMENT for a dimension that is not a non-negative integer)
 * before a tensor of `shape` is allocated when it could not be: more than MAX_TENSOR_ELEMENTS
 * elements, or beyond what the wasm backend's memory can hold. `what` names the parameter (and the
 * config field that sized it) in the message; no untyped RangeError or wasm trap reaches the user.
 */
export function checkAllocation(shape: readonly number[], what: string, bytesPerElement = 4): void {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new PeftError('INVALID_ARGUMENT', `${what}: dimension ${d} of shape [${shape}] is not a non-negative integer`);
    n *= d;
  }
  if (n > MAX_TENSOR_ELEMENTS) {
    throw new PeftError('LIMIT_EXCEEDED', `${what}: shape [${shape}] has ${n} elements, more than one tensor can hold (${MAX_TENSOR_ELEMENTS})`);
  }
  if (tf.getBackend() === 'wasm' && (n * bytesPerElement > WASM_MAX_TENSOR_BYTES || tf.memory().numBytes + n * bytesPerElement > WASM_MAX_BYTES)) {
    throw new PeftError(
      'LIMIT_EXCEEDED',
      `${what}: shape [${shape}] needs ${((n * bytesPerElement) / 2 ** 30).toFixed(2)} GiB, beyond what the wasm backend's 4 GiB memory can hold (1 GiB a new tensor; ${(tf.memory().numBytes / 2 ** 30).toFixed(2)} GiB in use)`,
    );
  }
}

/** Kaiming-uniform with a = √5, PyTorch's default for Linear weights: U(-1/√fanIn, 1/√fanIn). */
export function kaimingUniform(shape: number[], fanIn: number, seed?: number): tf.Tensor {
  checkAllocation(shape, 'kaimingUniform');
  const bound = 1 / Math.sqrt(fanIn);
  return tf.randomUniform(shape, -bound, bound, 'float32', seed ?? nextSeed());
}

export interface LinearOptions {
  bias?: boolean;
  /** Initial weight [out, in]; random (PyTorch's init) when absent. */
  weight?: tf.Tensor;
  biasValue?: tf.Tensor;
}

/** torch.nn.Linear: weight [out, in], optional bias [out]. */
export class Linear extends Module implements Layer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    if (!opts.weight) checkAllocation([outFeatures, inFeatures], `Linear(${inFeatures}, ${outFeatures}) weight`);
    this.registerParameter('weight', opts.weight ?? kaimingUniform([outFeatures, inFeatures], inFeatures), true, !opts.weight);
    if (opts.bias ?? true) this.registerParameter('bias', opts.biasValue ?? kaimingUniform([outFeatures], inFeatures), true, !opts.biasValue);
  }
  get weight(): tf.Variable {
    return this.param('weight');
  }
  get bias(): tf.Variable | undefined {
    return this.maybeParam('bias');
  }
  forward(x: tf.Tensor): tf.Tensor {
    return linearOp({ x, weight: this.weight, bias: this.bias }, {});
  }
}

/** GPT-2's Conv1D: a linear layer whose weight is stored transposed, [in, out]. */
export class Conv1D extends Module implements Layer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(outFeatures: number, inFeatures: number) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    checkAllocation([inFeatures, outFeatures], `Conv1D(${outFeatures}, ${inFeatures}) weight`);
    this.registerParameter('weight', tf.randomNormal([inFeatures, outFeatures], 0, 0.02, 'float32', nextSeed()), true, true);
    this.registerParameter('bias', tf.zeros([outFeatures]), true, true);
  }
  get weight(): tf.Variable {
    return this.param('weight');
  }
  get bias(): tf.Variable | undefined {
    return this.maybeParam('bias');
  }
  forward(x: tf.Tensor): tf.Tensor {
    return linear2d(x, (x2) => {
      const y = tf.matMul(x2, this.weight as tf.Tensor2D);
      return this.bias ? tf.add(y, this.bias) : y;
    });
  }
}

/** torch.nn.Embedding: weight [num, dim]. */
export class Embedding extends Module {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;
  constructor(numEmbeddings: number, embeddingDim: number, weight?: tf.Tensor) {
    super();
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    if (!weight) checkAllocation([numEmbeddings, embeddingDim], `Embedding(${numEmbeddings}, ${embeddingDim}) weight`);
    this.registerParameter('weight', weight ?? tf.randomNormal([numEmbeddings, embeddingDim], 0, 1, 'float32', nextSeed()), true, !weight);
  }
  get weight(): tf.Variable {
    return this.param('weight');
  }
  /** ids: int32 tensor of any shape → [..., dim]. */
  forward(ids: tf.Tensor): tf.Tensor {
    return tf.gather(this.weight, ids.dtype === 'int32' ? ids : ids.toInt());
  }
}

/** LLaMA's RMSNorm: x / √(mean(x²) + eps) · weight. */
export class RMSNorm extends Module implements Layer {
  readonly eps: number;
  constructor(dim: number, eps = 1e-6) {
    super();
    this.eps = eps;
    this.registerParameter('weight', tf.ones([dim]), true, true);
  }
  forward(x: tf.Tensor): tf.Tensor {
    // peftjs.RmsNorm: its reference is this layer's former composition (wasm/cpu run it unchanged);
    // webgpu runs one WGSL dispatch forward and one for dx
    return tf.tidy(() => rmsNormOp({ x, weight: this.param('weight') }, { eps: this.eps }));
  }
}

/** torch.nn.LayerNorm over the last dimension. */
export class LayerNorm extends Module implements Layer {
  readonly eps: number;
  constructor(dim: number, eps = 1e-5) {
    super();
    this.eps = eps;
    this.registerParameter('weight', tf.ones([dim]), true, true);
    this.registerParameter('bias', tf.zeros([dim]), true, true);
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const mean = tf.mean(x, -1, true);
      const centered = tf.sub(x, mean);
      const variance = tf.mean(tf.square(centered), -1, true);
      return tf.add(tf.mul(tf.mul(centered, tf.rsqrt(tf.add(variance, this.eps))), this.param('weight')), this.param('bias'));
    });
  }
}

/** Inverted dropout, active only in training mode. */
export class Dropout extends Module implements Layer {
  constructor(readonly p: number) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    if (!this.training || this.p === 0) return x;
    return tf.dropout(x, this.p, undefined, nextSeed());
  }
}

/** Passes its input through unchanged (PyTorch's nn.Identity). */
export class Identity extends Module implements Layer {
  forward(x: tf.Tensor): tf.Tensor {
    return x;
  }
}

/**
 * A sub-block's residual connection, `residual + hidden`, as a module of its own: the point where
 * bottleneck adapters sit (AdapterHub's `attention_adapters` / `output_adapters` of a decoder layer). A
 * decoder layer calls `addResidual(hidden, residual)` on whatever module is installed there, so a method
 * can replace it with a layer that sees both the sub-block's output and its input. No parameters.
 */
export class ResidualAdd extends Module implements Layer, ResidualHook {
  addResidual(hidden: tf.Tensor, residual: tf.Tensor): tf.Tensor {
    return tf.add(residual, hidden);
  }
  forward(): tf.Tensor {
    throw new PeftError('INVALID_ARGUMENT', 'ResidualAdd takes two inputs: call addResidual(hidden, residual)');
  }
}

/** What a decoder layer calls at a residual connection (ResidualAdd, or a method's layer installed in its place). */
export interface ResidualHook {
  addResidual(hidden: tf.Tensor, residual: tf.Tensor): tf.Tensor;
}
