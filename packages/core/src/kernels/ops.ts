import * as tf from '@tensorflow/tfjs';
import { defineOp } from './registry';
import { registerCpuFastPaths } from './cpu';
import { registerWebgpuFastPaths } from './webgpu/linear';

/** Flattens [..., n] to [rows, n] and back: matMul kernels are fastest on 2-D operands. */
export function linear2d(x: tf.Tensor, fn: (x2: tf.Tensor2D) => tf.Tensor): tf.Tensor {
  const lead = x.shape.slice(0, -1);
  const y = fn(x.reshape([-1, x.shape[x.shape.length - 1] as number]) as tf.Tensor2D);
  return y.reshape([...lead, y.shape[1] as number]);
}

/** y = x·Wᵀ + b, PyTorch's Linear with W stored [out, in]. */
export const linearOp = defineOp<{ x: tf.Tensor; weight: tf.Tensor; bias?: tf.Tensor }, Record<string, never>>({
  name: 'peftjs.Linear',
  inputNames: ['x', 'weight', 'bias'],
  reference: ({ x, weight, bias }) =>
    linear2d(x, (x2) => {
      const y = tf.matMul(x2, weight as tf.Tensor2D, false, true);
      return bias ? tf.add(y, bias) : y;
    }),
});

/**
 * a·b over matching leading (batch) dims, both operands laid out for the plain kernel: a [..., M, K],
 * b [..., K, N] → [..., M, N] (a leading size of 1 broadcasts). Attention's q·kᵀ (with kᵀ transposed
 * explicitly) and probs·v. On wasm/cpu the fast path runs one plain 2-D product per batch entry, which
 * is an order of magnitude above tfjs's batched kernel there; its gradient uses this op again.
 */
export const batchMatMulOp = defineOp<{ a: tf.Tensor; b: tf.Tensor }, Record<string, never>>({
  name: 'peftjs.BatchMatMul',
  inputNames: ['a', 'b'],
  reference: ({ a, b }) => tf.matMul(a, b),
});

registerCpuFastPaths(linearOp, batchMatMulOp);
registerWebgpuFastPaths(linearOp, batchMatMulOp);

const stopGradientFn = tf.customGrad(((x: tf.Tensor) => ({
  value: tf.clone(x),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as any);

/** The value of x with no gradient flowing back (PyTorch's .detach()); tfjs has no such op. */
export function stopGradient(x: tf.Tensor): tf.Tensor {
  return stopGradientFn(x) as tf.Tensor;
}
