// The frugal backward pass: bit-identical gradients to tfjs's own, with memory freed as it goes.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { setFrugalGradients } from './grad';
import { Linear } from './nn/layers';
import { manualSeed } from './nn/random';

/** A probe whose gradient records the bytes alive when the backward pass reaches it (the graph's start). */
function probe(record: (bytes: number) => void) {
  return tf.customGrad(((x: tf.Tensor) => ({
    value: tf.clone(x),
    gradFunc: (dy: tf.Tensor) => {
      record(tf.memory().numBytes);
      return tf.clone(dy);
    },
  })) as never) as unknown as (x: tf.Tensor) => tf.Tensor;
}

function run(frugal: boolean) {
  setFrugalGradients(frugal);
  manualSeed(0);
  const layers = Array.from({ length: 6 }, (_, i) => new Linear(64, 64, { bias: true, weight: tf.randomNormal([64, 64], 0, 0.2, 'float32', i + 1) }));
  const w = tf.variable(tf.randomNormal([64, 64], 0, 0.1, 'float32', 99), true, `w${frugal}`);
  const x = tf.randomNormal([128, 64], 0, 1, 'float32', 7);
  let bytesAtStart = 0;
  const p = probe((b) => (bytesAtStart = b));
  const before = tf.memory().numTensors;
  const { value, grads } = tf.variableGrads(() => {
    let h = p(tf.matMul(x, w));
    for (const l of layers) h = tf.tanh(l.forward(h));
    return tf.mean(tf.square(h)) as tf.Scalar;
  }, [w]);
  const after = tf.memory().numTensors;
  const out = { loss: value.dataSync()[0], grad: grads[w.name].dataSync().slice(), bytesAtStart, leaked: after - before - 2 };
  tf.dispose([value, ...Object.values(grads), w, x]);
  for (const l of layers) l.dispose();
  setFrugalGradients(true);
  return out;
}

describe('frugal gradients', () => {
  it('give bit-identical gradients and free activations during the backward pass', () => {
    const plain = run(false);
    const frugal = run(true);
    expect(frugal.loss).toBe(plain.loss);
    expect(Array.from(frugal.grad)).toEqual(Array.from(plain.grad));
    expect(frugal.leaked).toBe(0);
    expect(plain.leaked).toBe(0);
    // by the time the backward pass reaches the first op, the six layers' activations and gradients are gone
    expect(frugal.bytesAtStart).toBeLessThan(plain.bytesAtStart - 6 * 128 * 64 * 4);
  });

  it('a gradient function that passes dy on as an input gradient is not freed under its consumer', () => {
    setFrugalGradients(true);
    const pass = tf.customGrad(((x: tf.Tensor) => ({ value: tf.clone(x), gradFunc: (dy: tf.Tensor) => dy })) as never) as unknown as (x: tf.Tensor) => tf.Tensor;
    const x = tf.variable(tf.tensor1d([1, 2, 3]), true, 'passx');
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(pass(pass(x)), 2)) as tf.Scalar, [x]);
    expect(Array.from(grads[x.name].dataSync())).toEqual([2, 2, 2]);
    tf.dispose([x, ...Object.values(grads)]);
  });
});
