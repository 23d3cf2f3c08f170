// peftjs.SwiGLU and peftjs.CrossEntropy: the WGSL fast paths against their tfjs references on webgpu
// (lavapipe in CI; skipped without an adapter), and the CPU backends running exactly the references.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { checkConformance, initBackend, setFastPathsEnabled, webgpuBackend } from '@peftjs/core';
import { crossEntropyOp, swigluOp } from './ops';
import { tokenCrossEntropy } from './common';

const wantGpu = process.env.PEFTJS_TEST_BACKEND !== 'cpu';
const report = wantGpu ? await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e) : undefined;
const onGpu = report !== undefined && !(report instanceof Error) && tf.getBackend() === 'webgpu';

let seed = 11;
const rand = (shape: number[], scale = 1) => tf.mul(tf.randomNormal(shape, 0, 1, 'float32', seed++), scale);
const maxAbs = async (t: tf.Tensor) => {
  const m = tf.tidy(() => tf.max(tf.abs(t)));
  const v = (await m.data())[0];
  tf.dispose([m, t]);
  return v;
};

/** Loss and dlogits of tokenCrossEntropy, with the fast paths on or off. */
function lossAndGrad(logits: tf.Tensor, labels: tf.Tensor, fast: boolean): [tf.Tensor, tf.Tensor] {
  setFastPathsEnabled(fast);
  try {
    const { value, grad } = tf.valueAndGrad((l: tf.Tensor) => tokenCrossEntropy(l, labels))(logits);
    return [value, grad];
  } finally {
    setFastPathsEnabled(true);
  }
}

/** GPU dispatches (bind groups made: one per dispatch, tfjs's or ours) while `f` runs and its results are read. */
async function dispatches(f: () => tf.Tensor | tf.Tensor[]): Promise<number> {
  const device = webgpuBackend().device as unknown as { createBindGroup: (d: unknown) => unknown };
  const orig = device.createBindGroup;
  let n = 0;
  device.createBindGroup = (d: unknown) => {
    n++;
    return orig.call(device, d);
  };
  try {
    const r = f();
    const rs = Array.isArray(r) ? r : [r];
    await Promise.all(rs.map((t) => t.data()));
    tf.dispose(rs);
  } finally {
    device.createBindGroup = orig;
  }
  return n;
}

describe.skipIf(!onGpu)('dispatch counts on webgpu', () => {
  it('SwiGLU: 1 forward, 1 backward (both gradients); cross-entropy: 2 forward, 1 backward', async () => {
    const gate = rand([8, 96]);
    const up = rand([8, 96]);
    const logits = rand([8, 1000]);
    const labels = tf.tensor1d([1, -100, 3, 999, 0, 5, 6, 7], 'int32');
    await Promise.all([gate.data(), up.data(), logits.data(), labels.data()]);
    expect(await dispatches(() => swigluOp({ gate, up }, {}))).toBe(1);
    expect(await dispatches(() => tf.grads((g: tf.Tensor, u: tf.Tensor) => swigluOp({ gate: g, up: u }, {}))([gate, up]))).toBe(2);
    expect(await dispatches(() => crossEntropyOp({ logits, labels }, {}))).toBe(2);
    expect(await dispatches(() => tf.grad((l: tf.Tensor) => crossEntropyOp({ logits: l, labels }, {}))(logits))).toBe(3);
    tf.dispose([gate, up, logits, labels]);
  });
});

describe.skipIf(!onGpu)('peftjs.SwiGLU on webgpu', () => {
  // scalar (size not a multiple of 4) and vec4 kernels; one row
  for (const shape of [[3, 7], [2, 5, 64], [1, 1536], [1, 1]]) {
    it(`forward and both gradients match the reference for [${shape}]`, async () => {
      expect(swigluOp.fastPathBackends()).toContain('webgpu');
      const r = await checkConformance(swigluOp, () => ({ gate: rand(shape, 4), up: rand(shape, 2) }), {});
      expect(r.backend).toBe('webgpu');
      expect(r.forwardMaxAbsDiff).toBeLessThan(1e-6);
      expect(r.gradMaxAbsDiff.gate).toBeLessThan(1e-5);
      expect(r.gradMaxAbsDiff.up).toBeLessThan(1e-5);
      expect(r.ok).toBe(true);
    });
  }

  it('leaks no tensors, with both gradients or only one asked for', async () => {
    const gate = rand([4, 33]);
    const up = rand([4, 33]);
    const before = tf.memory().numTensors;
    tf.dispose(tf.grads((g: tf.Tensor, u: tf.Tensor) => tf.sum(swigluOp({ gate: g, up: u }, {})))([gate, up]));
    const dg = tf.grad((g: tf.Tensor) => tf.sum(swigluOp({ gate: g, up }, {})))(gate);
    await dg.data();
    dg.dispose();
    const du = tf.grad((u: tf.Tensor) => tf.sum(swigluOp({ gate, up: u }, {})))(up);
    du.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([gate, up]);
  });
});

describe.skipIf(!onGpu)('peftjs.CrossEntropy on webgpu', () => {
  const cases: { name: string; n: number; v: number; labels: (n: number, v: number) => number[] }[] = [
    { name: 'one row', n: 1, v: 37, labels: () => [5] },
    { name: 'odd V, some -100', n: 6, v: 37, labels: () => [0, -100, 36, 7, -100, 12] },
    { name: 'V of many chunks per thread (V ≫ 256), label at the ends', n: 5, v: 5003, labels: (_, v) => [0, v - 1, -100, 4000, 17] },
    { name: 'vec4 rows (V % 4 = 0), some -100, label at the ends', n: 7, v: 1028, labels: (_, v) => [0, -100, v - 1, 5, -100, -100, 1000] },
    { name: 'SmolLM vocabulary, 3 rows', n: 3, v: 49152, labels: () => [49151, -100, 123] },
  ];
  for (const c of cases) {
    it(`loss and dlogits match the reference: ${c.name} [${c.n}, ${c.v}]`, async () => {
      const logits = rand([c.n, c.v], 3);
      const labels = tf.tensor1d(c.labels(c.n, c.v), 'int32');
      const before = tf.memory().numTensors;
      const [lr, gr] = lossAndGrad(logits, labels, false);
      const [lf, gf] = lossAndGrad(logits, labels, true);
      const ref = (await lr.data())[0];
      const got = (await lf.data())[0];
      expect(Math.abs(got - ref)).toBeLessThanOrEqual(1e-5 * Math.abs(ref));
      const scale = await maxAbs(gr.clone());
      expect(await maxAbs(tf.sub(gr, gf))).toBeLessThanOrEqual(1e-5 * scale);
      tf.dispose([lr, gr, lf, gf]);
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([logits, labels]);
    });
  }

  it('every label -100: NaN loss (as torch and the reference), zero dlogits (as torch)', async () => {
    const logits = rand([4, 300]);
    const labels = tf.tensor1d([-100, -100, -100, -100], 'int32');
    const [lr] = lossAndGrad(logits, labels, false);
    const [lf, gf] = lossAndGrad(logits, labels, true);
    expect(Number.isNaN((await lr.data())[0])).toBe(true);
    expect(Number.isNaN((await lf.data())[0])).toBe(true);
    expect(Array.from(await gf.data()).every((x) => x === 0)).toBe(true);
    tf.dispose([logits, labels, lr, lf, gf]);
  });

  for (const v of [50, 52]) it(`labels outside [0, V): counted in the mean with zero loss and zero gradient (the one-hot route), V ${v}`, async () => {
    const logits = rand([4, v]);
    const labels = tf.tensor1d([3, v + 5, -100, -3], 'int32');
    const [lf, gf] = lossAndGrad(logits, labels, true);
    // expected: −log softmax(row 0)[3] / 3 (three labels ≠ -100)
    const logp = tf.logSoftmax(logits);
    const lp = await logp.data();
    expect((await lf.data())[0]).toBeCloseTo(-lp[3] / 3, 5);
    const g = await gf.data();
    const p0 = Array.from(lp.slice(0, v), (x, j) => (Math.exp(x) - (j === 3 ? 1 : 0)) / 3);
    for (let j = 0; j < v; j++) expect(g[j]).toBeCloseTo(p0[j], 6);
    expect(Array.from(g.slice(v)).every((x) => x === 0)).toBe(true);
    tf.dispose([logits, labels, lf, gf, logp]);
  });


  it('no rows: NaN (the reference\'s 0/0 on the CPU backends; tfjs-webgpu\'s composition fails on empty tensors)', async () => {
    const logits = tf.zeros([0, 12]);
    const labels = tf.tensor1d([], 'int32');
    const [lf, gf] = lossAndGrad(logits, labels, true);
    expect(Number.isNaN((await lf.data())[0])).toBe(true);
    expect(gf.shape).toEqual([0, 12]);
    tf.dispose([logits, labels, lf, gf]);
  });

  it('float labels are cast for the fast path; the op checks shapes with a PeftError', async () => {
    const logits = rand([2, 10]);
    const lf = tokenCrossEntropy(logits, tf.tensor1d([1, 2], 'float32'));
    const li = tokenCrossEntropy(logits, tf.tensor1d([1, 2], 'int32'));
    expect((await lf.data())[0]).toBe((await li.data())[0]);
    expect(() => crossEntropyOp({ logits, labels: tf.tensor1d([1, 2, 3], 'int32') }, {})).toThrow(/labels \[N\]/);
    tf.dispose([logits, lf, li]);
  });
});

describe.skipIf(onGpu)('SwiGLU and cross-entropy on the CPU backends', () => {
  it('run exactly the former tfjs compositions (bit-identical)', async () => {
    const gate = rand([3, 9], 3);
    const up = rand([3, 9]);
    const y = swigluOp({ gate, up }, {});
    const ref = tf.mul(tf.mul(gate, tf.sigmoid(gate)), up);
    expect(Array.from(await y.data())).toEqual(Array.from(await ref.data()));
    const logits = rand([4, 11], 2);
    const labels = tf.tensor1d([3, -100, 10, 0], 'int32');
    const loss = tokenCrossEntropy(logits, labels);
    const logp = tf.logSoftmax(logits);
    const picked = tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d([3, 0, 10, 0], 'int32'), 11).toFloat()), -1);
    const w = tf.tensor1d([1, 0, 1, 1]);
    const expected = tf.div(tf.neg(tf.sum(tf.mul(picked, w))), tf.sum(w));
    expect((await loss.data())[0]).toBeCloseTo((await expected.data())[0], 6);
    tf.dispose([gate, up, y, ref, logits, labels, loss, logp, picked, w, expected]);
  });
});
