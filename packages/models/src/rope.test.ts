import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { checkConformance } from '@peftjs/core';
import { ropeOp } from '@peftjs/models';
import { expectFastPathExact } from '../../../tools/testing/ops';

// The fused RoPE fast path (wasm, cpu) against its tfjs reference: the same float32 roundings, so the
// forward must be bit-identical; gradients for x, cos and sin too (cos / sin broadcast over batch or not).
const backend = tf.getBackend();
const fast = ropeOp.fastPathBackends().includes(backend);

describe.skipIf(!fast)(`peftjs.Rope fast path on ${backend}${fast ? '' : ' (skipped: none registered)'}`, () => {
  const cases: [string, number[], number[]][] = [
    ['tables shared over the batch', [2, 3, 5, 8], [1, 1, 5, 8]],
    ['a table per sequence (position ids)', [3, 2, 4, 6], [3, 1, 4, 6]],
    ['one position (decoding)', [2, 4, 1, 64], [1, 1, 1, 64]],
  ];
  for (const [what, xs, cs] of cases) {
    for (const transpose of [false, true]) {
      it(`${what}${transpose ? ', transposed (the gradient\'s form)' : ''}: x [${xs}], cos/sin [${cs}]`, async () => {
        const make = () => ({ x: tf.randomNormal(xs, 0, 2, 'float32', 1), cos: tf.randomUniform(cs, -1, 1, 'float32', 2), sin: tf.randomUniform(cs, -1, 1, 'float32', 3) });
        const r = await checkConformance(ropeOp, make, { transpose }, { rtol: 1e-6 });
        expect(r.ok, JSON.stringify(r)).toBe(true);
        const inputs = make();
        await expectFastPathExact(ropeOp, inputs, { transpose }, `x [${xs}]`);
        tf.dispose(Object.values(inputs));
      });
    }
  }

  it('rejects shapes it cannot rotate, naming them', () => {
    const x = tf.zeros([1, 2, 3, 5]);
    const c = tf.zeros([1, 1, 3, 5]);
    expect(() => ropeOp({ x, cos: c, sin: c }, {})).toThrow(/peftjs\.Rope: .*x \[1,2,3,5\]/);
    tf.dispose([x, c]);
  });

  it('leaks no tensors across forward and backward passes', () => {
    const x = tf.randomNormal([2, 2, 4, 8]);
    const c = tf.randomNormal([1, 1, 4, 8]);
    const step = () => tf.tidy(() => tf.grad((v: tf.Tensor) => tf.sum(ropeOp({ x: v, cos: c, sin: c }, {})))(x));
    step().dispose();
    const n = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) step().dispose();
    expect(tf.memory().numTensors).toBe(n);
    tf.dispose([x, c]);
  });
});
