import * as tf from '@tensorflow/tfjs';
import { expect } from 'vitest';
import { setFastPathsEnabled, type Op, type OpAttrs, type TensorInputs } from '@peftjs/core';

/**
 * Runs a registry op through its fast path on the current backend and through its reference, and expects the
 * two outputs to be bit-identical (the first differing index is reported; no diff of the whole array).
 */
export async function expectFastPathExact<I extends TensorInputs, A extends OpAttrs>(op: Op<I, A>, inputs: I, attrs: A, what = ''): Promise<void> {
  const y = op(inputs, attrs);
  setFastPathsEnabled(false);
  let ref: tf.Tensor;
  try {
    ref = op(inputs, attrs);
  } finally {
    setFastPathsEnabled(true);
  }
  const [got, want] = [await y.data(), await ref.data()];
  const bad = got.findIndex((v, i) => !Object.is(v, want[i]));
  expect(bad, `${what}: first difference at ${bad}: ${got[bad]} vs ${want[bad]}`).toBe(-1);
  tf.dispose([y, ref]);
}

/** Runs `step` once to warm up, then `repeats` more times, expecting tf.memory()'s tensor count and bytes unchanged. */
export function expectFlatMemory(step: () => void, repeats = 5): void {
  step();
  const { numTensors, numBytes } = tf.memory();
  for (let i = 0; i < repeats; i++) step();
  expect(tf.memory().numTensors).toBe(numTensors);
  expect(tf.memory().numBytes).toBe(numBytes);
}
