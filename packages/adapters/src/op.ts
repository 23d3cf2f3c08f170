import * as tf from '@tensorflow/tfjs';
import { defineOp, linearOp } from '@peftjs/core';
import type { AdapterActivation } from './config';

/** The bottleneck's non-linearity, as AdapterHub's Activation_Function_Class (transformers' ACT2FN). */
export function adapterActivation(kind: AdapterActivation | string, x: tf.Tensor): tf.Tensor {
  switch (kind) {
    case 'relu':
      return tf.relu(x);
    case 'tanh':
      return tf.tanh(x);
    case 'swish':
    case 'silu':
      return tf.mul(x, tf.sigmoid(x));
    case 'gelu':
      // exact erf GELU (transformers' GELUActivation)
      return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
    default:
      throw new Error(`peftjs.BottleneckAdapter: unknown activation "${kind}"`);
  }
}

export type BottleneckInputs = {
  /** The adapter's input [..., d] (after adapter_norm_before when there is one). */
  x: tf.Tensor;
  /** What the adapter's output is added to [..., d]. */
  residual: tf.Tensor;
  /** adapter_down [r, d], its bias [r]. */
  downWeight: tf.Tensor;
  downBias: tf.Tensor;
  /** adapter_up [d, r], its bias [d]. */
  upWeight: tf.Tensor;
  upBias: tf.Tensor;
  /** A factor broadcast against the output: learned scaling [1] / [d], times a gate [B, 1, 1]; absent = 1. */
  scale?: tf.Tensor;
};

/**
 * A bottleneck adapter in one op: residual + (act(x·Wdᵀ + bd)·Wuᵀ + bu) · scaling · scale, W in PyTorch's
 * [out, in] layout. The reference is this composition of tfjs ops (differentiable); backends may register
 * fast paths that fuse it.
 */
export const bottleneckAdapterOp = defineOp<BottleneckInputs, { activation: string; scaling: number }>({
  name: 'peftjs.BottleneckAdapter',
  inputNames: ['x', 'residual', 'downWeight', 'downBias', 'upWeight', 'upBias', 'scale'],
  describe: 'x [..., d], residual [..., d], downWeight [r, d], downBias [r], upWeight [d, r], upBias [d], scale broadcastable to [..., d]',
  reference: ({ x, residual, downWeight, downBias, upWeight, upBias, scale }, { activation, scaling }) =>
    tf.tidy(() => {
      // the projections through core's peftjs.Linear: its layout fast paths on wasm / cpu (a transposed
      // tfjs matMul runs there 10× below the plain one), its tfjs reference wherever fast paths are off
      const down = adapterActivation(activation, linearOp({ x, weight: downWeight, bias: downBias }, {}));
      const up = linearOp({ x: down, weight: upWeight, bias: upBias }, {});
      let out = scaling === 1 ? up : tf.mul(up, scaling);
      if (scale) out = tf.mul(out, scale);
      return tf.add(residual, out);
    }),
});
