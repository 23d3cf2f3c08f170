import * as tf from '@tensorflow/tfjs';
import { defineOp } from '../registry';
import { matmulSupports } from './matmul';

/**
 * `peftjs.MatMul`: alpha·op(a)·op(b) (+ bias) (+ beta·c) as a differentiable op. Its reference is tfjs's
 * matMul (any backend); on webgpu its fast path is the WGSL matmul of ./matmul.ts, and its gradient uses
 * that kernel again with the transposes folded into the operand layout (no transpose copies).
 *
 * a [..., M, K] (or [..., K, M] with transA), b [..., K, N] (or [..., N, K] with transB): equal batch
 * dims, or one operand with a batch of 1 (or rank 2) broadcasting. bias [N]; c shaped like the output
 * or like one batch entry [M, N].
 */
export type MatMulInputs = { a: tf.Tensor; b: tf.Tensor; bias?: tf.Tensor; c?: tf.Tensor };
export type MatMulAttrs = { transA: boolean; transB: boolean; alpha: number; beta: number };

export const matmulOp = defineOp<MatMulInputs, MatMulAttrs>({
  name: 'peftjs.MatMul',
  inputNames: ['a', 'b', 'bias', 'c'],
  reference: ({ a, b, bias, c }, { transA, transB, alpha, beta }) => {
    let y = tf.matMul(a, b, transA, transB);
    if (alpha !== 1) y = tf.mul(y, alpha);
    if (bias) y = tf.add(y, bias);
    if (c) y = tf.add(y, beta === 1 ? c : tf.mul(c, beta));
    return y;
  },
});

export interface FusedMatMulOptions {
  transA?: boolean;
  transB?: boolean;
  bias?: tf.Tensor;
  c?: tf.Tensor;
  alpha?: number;
  beta?: number;
}

/** alpha·op(a)·op(b) + bias + beta·c through `peftjs.MatMul` (the WGSL kernel on webgpu). */
export function fusedMatMul(a: tf.Tensor, b: tf.Tensor, opts: FusedMatMulOptions = {}): tf.Tensor {
  const inputs = { a, b, bias: opts.bias, c: opts.c };
  const attrs = { transA: !!opts.transA, transB: !!opts.transB, alpha: opts.alpha ?? 1, beta: opts.beta ?? 1 };
  // what the WGSL kernel does not cover (partial batch broadcasting, int32) runs the reference
  if (!matmulSupports(a, b, attrs.transA, attrs.transB)) return matmulOp.reference(inputs, attrs);
  return matmulOp(inputs, attrs);
}

/** Sums g over the dims that `shape` broadcasts (left-padded with 1s), then reshapes to `shape`. */
export function reduceToShape(g: tf.Tensor, shape: number[]): tf.Tensor {
  if (tf.util.arraysEqual(g.shape, shape)) return g;
  if (tf.util.sizeFromShape(g.shape) === tf.util.sizeFromShape(shape)) return tf.reshape(g, shape);
  const pad = g.shape.length - shape.length;
  const full = [...new Array(Math.max(pad, 0)).fill(1), ...shape];
  const axes = g.shape.map((d, i) => (full[i] === 1 && d !== 1 ? i : -1)).filter((i) => i >= 0);
  return tf.reshape(tf.sum(g, axes, true), shape);
}

const batchOf = (t: tf.Tensor) => tf.util.sizeFromShape(t.shape.slice(0, -2));
const rows2d = (t: tf.Tensor) => tf.reshape(t, [-1, t.shape[t.shape.length - 1]]);

/**
 * Gradient thunks of y = alpha·op(a)·op(b): each a single WGSL product with the transposes in its
 * layout. An operand broadcast over the batch gets its gradient summed over it; when its rows are the
 * flattened batch (a not transposed) that sum is folded into one product over batch·M rows.
 */
export function matmulGradients(dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor, transA: boolean, transB: boolean, alpha: number) {
  const broadcastB = batchOf(b) === 1 && batchOf(dy) > 1;
  return {
    a: () => {
      const g = transA
        ? fusedMatMul(b, dy, { transA: transB, transB: true, alpha }) // dA = alpha·op(B)·dyᵀ  [K, M]
        : fusedMatMul(dy, b, { transB: !transB, alpha }); // dA = alpha·dy·op(B)ᵀ  [M, K]
      return reduceToShape(g, a.shape);
    },
    b: () => {
      if (broadcastB && !transA) {
        // Σ over the batch of Aᵢᵀ·dyᵢ is one product over the stacked rows
        const a2 = rows2d(a);
        const dy2 = rows2d(dy);
        const g = transB ? fusedMatMul(dy2, a2, { transA: true, alpha }) : fusedMatMul(a2, dy2, { transA: true, alpha });
        return tf.reshape(g, b.shape);
      }
      const g = transB
        ? fusedMatMul(dy, a, { transA: true, transB: transA, alpha }) // dB = alpha·dyᵀ·op(A)  [N, K]
        : fusedMatMul(a, dy, { transA: !transA, alpha }); // dB = alpha·op(A)ᵀ·dy  [K, N]
      return reduceToShape(g, b.shape);
    },
  };
}
