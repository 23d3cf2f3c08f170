// The gated optimizer step (step(grads, lr, { apply })) that the Trainer uses on GPU backends: applied,
// it is bit-identical to the plain step; not applied, it changes nothing (NaN gradients included); the
// step count lives on the device until sync().
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { AdamW, SGD, clipByNorm, clipGradNorm, clipGradNormOnDevice, type Optimizer } from './index';

type Make = (p: [string, tf.Variable][]) => Optimizer;
const makers: [string, Make][] = [
  ['AdamW', (p) => new AdamW(p, { weightDecay: 0.1 })],
  ['SGD with momentum and decay', (p) => new SGD(p, { momentum: 0.9, weightDecay: 0.05 })],
  ['SGD plain', (p) => new SGD(p)],
];

async function snapshot(w: tf.Variable, opt: Optimizer): Promise<number[][]> {
  return [Array.from(await w.data()), ...(await Promise.all(Object.values(opt.stateTensors()).map(async (t) => Array.from(await t.data()))))];
}

let id = 0;
function setup(make: Make) {
  const w = tf.tidy(() => tf.variable(tf.randomNormal([4, 3], 0, 1, 'float32', 1), true, `opt-test-${id++}`));
  return { w, opt: make([['w', w]]) };
}
const grad = (k: number) => tf.randomNormal([4, 3], 0, 1, 'float32', 100 + k);

describe.each(makers)('%s', (_name, make) => {
  it('a gated step that applies is bit-identical to the plain step; one that does not changes nothing; the count syncs', async () => {
    const before = tf.memory().numTensors;
    const a = setup(make);
    const b = setup(make);
    const yes = tf.scalar(true, 'bool');
    const no = tf.scalar(false, 'bool');
    const one = tf.scalar(1);
    const zero = tf.scalar(0);
    // plain: steps 0, 2, 3 (1 and 4 are "skipped"); gated: every step, 1 and 4 with apply false and NaN grads
    for (let k = 0; k < 6; k++) {
      const g = grad(k);
      const bad = tf.mul(g, NaN);
      const skip = k === 1 || k === 4;
      if (!skip) a.opt.step({ w: g }, 1e-2 * (k + 1));
      b.opt.step({ w: skip ? bad : g }, 1e-2 * (k + 1), { apply: skip ? no : yes });
      tf.dispose([g, bad]);
    }
    expect(b.opt.stepCount).toBe(6); // steps issued, before sync
    await b.opt.sync!();
    expect(b.opt.stepCount).toBe(4);
    expect(a.opt.stepCount).toBe(4);
    expect(await snapshot(b.w, b.opt)).toEqual(await snapshot(a.w, a.opt));
    // a plain step after gated ones, and numeric apply (0 / 1)
    const g = grad(9);
    a.opt.step({ w: g }, 3e-3);
    b.opt.step({ w: g }, 3e-3, { apply: one });
    b.opt.step({ w: g }, 3e-3, { apply: zero });
    a.opt.step({ w: g }, 3e-3);
    b.opt.step({ w: g }, 3e-3); // ungated after unsynced gated steps: still counted right
    await b.opt.sync!();
    expect(b.opt.stepCount).toBe(6);
    expect(await snapshot(b.w, b.opt)).toEqual(await snapshot(a.w, a.opt));
    expect(b.opt.stateJson().step).toBe(6);
    // state round trip resets the device count
    const c = setup(make);
    c.opt.loadState(b.opt.stateTensors(), b.opt.stateJson());
    expect(c.opt.stepCount).toBe(6);
    g.dispose();
    tf.dispose([yes, no, one, zero]);
    for (const x of [a, b, c]) {
      x.opt.dispose();
      x.w.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});

it('clipping: clipGradNorm reads asynchronously, clipGradNormOnDevice scales on the device, clipByNorm is the float64 rule', async () => {
  const grads = { a: tf.tensor1d([3, 0]), b: tf.tensor1d([0, 4]) };
  const r = await clipGradNorm(grads, 1);
  expect(r.norm).toBeCloseTo(5, 6);
  expect(Array.from(await r.grads.a.data())[0]).toBeCloseTo(3 / (5 + 1e-6), 6);
  const d = clipGradNormOnDevice(grads, 1);
  expect((await d.norm.data())[0]).toBeCloseTo(5, 6);
  expect(Array.from(await d.grads.b.data())[1]).toBeCloseTo(4 / (5 + 1e-6), 6);
  expect(clipByNorm(grads, 5, 10)).toBe(grads); // coefficient ≥ 1: unchanged
  expect(clipByNorm(grads, 5, 0)).toBe(grads); // no clipping
  tf.dispose([...Object.values(r.grads), ...Object.values(d.grads), d.norm, ...Object.values(grads)]);
});
