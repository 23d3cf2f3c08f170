import * as tf from '@tensorflow/tfjs';
import { defineOp } from '@peftjs/core';
import { registerSwiGluWebgpu } from './kernels/swiglu';
import { CROSS_ENTROPY_OUTPUTS_TO_SAVE, registerCrossEntropyWebgpu } from './kernels/ce';

/**
 * The models' kernel ops. Each reference is exactly the tfjs composition the models ran before the op
 * existed (so wasm and cpu, which have no fast path for these, compute bit-identical results); webgpu
 * has WGSL fast paths (kernels/swiglu.ts, kernels/ce.ts).
 */

/** LLaMA's gated MLP activation: silu(gate) · up, gate and up [..., intermediate]. */
export const swigluOp = defineOp<{ gate: tf.Tensor; up: tf.Tensor }, Record<string, never>>({
  name: 'peftjs.SwiGLU',
  inputNames: ['gate', 'up'],
  reference: ({ gate, up }) => tf.mul(tf.mul(gate, tf.sigmoid(gate)), up),
  describe: 'gate [..., i], up [..., i]',
});

/**
 * Mean cross-entropy of logits [N, C] against int labels [N], ignoring -100 (NaN when every label is
 * -100, as torch).
 */
export const crossEntropyOp = defineOp<{ logits: tf.Tensor; labels: tf.Tensor }, Record<string, never>>({
  name: 'peftjs.CrossEntropy',
  inputNames: ['logits', 'labels'],
  // webgpu's forward also returns the per-row logsumexp and the valid-label count, for its backward
  outputsToSave: CROSS_ENTROPY_OUTPUTS_TO_SAVE,
  reference: ({ logits, labels }) => {
    const [n, c] = logits.shape as number[];
    const valid = tf.notEqual(labels, -100);
    const safe = tf.where(valid, labels, tf.zerosLike(labels));
    // logSoftmax has a closed-form gradient; logSumExp's goes through max (a slow Equal mask on wasm)
    const logp = tf.logSoftmax(logits);
    let picked: tf.Tensor;
    if (tf.getKernel('UnsortedSegmentSum', tf.getBackend()) && n * c < 2 ** 31) {
      // gather the label's log-probability: no [N, C] one-hot in the forward
      picked = tf.gather(logp.reshape([-1]), tf.add(tf.mul(tf.range(0, n, 1, 'int32'), tf.scalar(c, 'int32')), safe));
    } else {
      // gather's gradient (UnsortedSegmentSum) is missing on wasm: select with a one-hot instead
      // (int32 then cast: wasm's OneHot returns zeros when asked for float32 directly)
      picked = tf.sum(tf.mul(logp, tf.oneHot(safe, c).toFloat()), -1);
    }
    const w = valid.toFloat();
    return tf.div(tf.neg(tf.sum(tf.mul(picked, w))), tf.sum(w));
  },
  describe: 'logits [N, V], labels [N] int32 (-100: ignored)',
});

registerSwiGluWebgpu(swigluOp);
registerCrossEntropyWebgpu(crossEntropyOp);
