import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { checkConformance, defineOp, registerFastPath, setBackendFastPaths } from './registry';

describe('kernel registry', () => {
  // A toy op with a fast path written directly against backend data (as a real CPU kernel would).
  const scaleAdd = defineOp<{ x: tf.Tensor; y: tf.Tensor }, { alpha: number }>({
    name: 'peftjs.test.ScaleAdd',
    inputNames: ['x', 'y'],
    reference: ({ x, y }, { alpha }) => tf.add(tf.mul(x, alpha), y),
  });

  it('runs the reference where no fast path exists, differentiably', () => {
    const x = tf.tensor1d([1, 2]);
    const y = tf.tensor1d([3, 4]);
    expect(Array.from(scaleAdd({ x, y }, { alpha: 2 }).dataSync())).toEqual([5, 8]);
    const g = tf.grad((x: tf.Tensor) => tf.sum(scaleAdd({ x, y }, { alpha: 3 })))(x);
    expect(Array.from(g.dataSync())).toEqual([3, 3]);
  });

  it('dispatches a registered fast path and passes conformance; a wrong one fails it', async () => {
    const backend = tf.getBackend();
    let calls = 0;
    registerFastPath(scaleAdd, {
      backendName: backend,
      kernelFunc: ({ inputs, attrs, backend: b }) => {
        calls++;
        const be = b as any;
        const xv = be.readSync(inputs.x.dataId) as Float32Array;
        const yv = be.readSync(inputs.y.dataId) as Float32Array;
        const out = new Float32Array(xv.length);
        for (let i = 0; i < xv.length; i++) out[i] = xv[i] * attrs.alpha + yv[i];
        return { dataId: be.write(out, inputs.x.shape, 'float32'), shape: inputs.x.shape, dtype: 'float32' };
      },
    });
    const make = () => ({ x: tf.randomNormal([4, 3]), y: tf.randomNormal([4, 3]) });
    const report = await checkConformance(scaleAdd, make, { alpha: 0.5 });
    expect(calls).toBeGreaterThan(0);
    expect(report.ok).toBe(true);
    expect(report.forwardMaxAbsDiff).toBeLessThan(1e-6);
    // a backend's fast paths can be parked (the reference runs) and restored
    const before = calls;
    setBackendFastPaths(backend, false);
    scaleAdd({ x: tf.ones([2]), y: tf.ones([2]) }, { alpha: 1 });
    expect(calls).toBe(before);
    setBackendFastPaths(backend, true);
    scaleAdd({ x: tf.ones([2]), y: tf.ones([2]) }, { alpha: 1 });
    expect(calls).toBe(before + 1);

    const broken = defineOp<{ x: tf.Tensor; y: tf.Tensor }, { alpha: number }>({
      name: 'peftjs.test.Broken',
      inputNames: ['x', 'y'],
      reference: ({ x, y }, { alpha }) => tf.add(tf.mul(x, alpha), y),
    });
    registerFastPath(broken, {
      backendName: backend,
      kernelFunc: ({ inputs, backend: b }) => {
        const be = b as any;
        const xv = be.readSync(inputs.x.dataId) as Float32Array;
        return { dataId: be.write(Float32Array.from(xv), inputs.x.shape, 'float32'), shape: inputs.x.shape, dtype: 'float32' };
      },
    });
    expect((await checkConformance(broken, make, { alpha: 0.5 })).ok).toBe(false);
  });

  it('a fast path with an aux output: the op returns the first, the gradient gets the saved ones, nothing leaks', async () => {
    const backend = tf.getBackend();
    // y = exp(x); the fast path also returns exp(x) as an aux output and its gradient reads it (dy·aux)
    const expOp = defineOp<{ x: tf.Tensor }, Record<string, never>>({
      name: 'peftjs.test.ExpAux',
      inputNames: ['x'],
      reference: ({ x }) => tf.exp(x),
      outputsToSave: [false, true],
    });
    let gradSaw: (tf.Tensor | undefined)[] = [];
    registerFastPath(expOp, {
      backendName: backend,
      kernelFunc: ({ inputs, backend: b }) => {
        const be = b as any;
        const xv = be.readSync(inputs.x.dataId) as Float32Array;
        const e = xv.map((v) => Math.exp(v));
        const mk = (vals: Float32Array) => ({ dataId: be.write(vals, inputs.x.shape, 'float32'), shape: inputs.x.shape, dtype: 'float32' as const });
        return [mk(e), mk(Float32Array.from(e))];
      },
      gradient: (dy, _inputs, _attrs, outputs) => {
        gradSaw = outputs;
        return { x: () => tf.mul(dy, outputs[1]!) };
      },
    });
    const x = tf.tensor1d([0, 1, -1]);
    const before = tf.memory().numTensors;
    const y = expOp({ x }, {});
    expect(y.shape).toEqual([3]);
    expect(tf.memory().numTensors).toBe(before + 1);
    y.dispose();
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(expOp({ x }, {}), tf.tensor1d([1, 2, 3]))))(x);
    expect(gradSaw.length).toBe(2);
    expect(gradSaw[0]).toBeUndefined();
    const gv = await g.data();
    [1, 2 * Math.E, 3 / Math.E].forEach((v, i) => expect(gv[i]).toBeCloseTo(v, 5));
    g.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect((await checkConformance(expOp, () => ({ x: tf.randomNormal([4, 3]) }), {})).ok).toBe(true);
    x.dispose();
  });

  it('a fast path registered after its tag was parked arrives parked, and can be restored (import order does not matter)', async () => {
    const backend = tf.getBackend();
    const TAG = 'test-late-tag';
    const late = defineOp<{ x: tf.Tensor }, Record<string, never>>({
      name: 'peftjs.test.Late',
      inputNames: ['x'],
      reference: ({ x }) => tf.mul(x, 2),
    });
    let calls = 0;
    setBackendFastPaths(backend, false, TAG);
    try {
      registerFastPath(late, {
        backendName: backend,
        tags: [TAG],
        kernelFunc: ({ inputs, backend: b }) => {
          calls++;
          const be = b as any;
          const xv = be.readSync(inputs.x.dataId) as Float32Array;
          return { dataId: be.write(xv.map((v) => v * 2), inputs.x.shape, 'float32'), shape: inputs.x.shape, dtype: 'float32' };
        },
      });
      expect(late.fastPathBackends()).not.toContain(backend);
      const x = tf.tensor1d([1, 2]);
      const y = late({ x }, {});
      expect(Array.from(await y.data())).toEqual([2, 4]);
      expect(calls).toBe(0);
      tf.dispose([x, y]);
    } finally {
      setBackendFastPaths(backend, true, TAG);
    }
    expect(late.fastPathBackends()).toContain(backend);
    const x = tf.tensor1d([3]);
    const y = late({ x }, {});
    expect(Array.from(await y.data())).toEqual([6]);
    expect(calls).toBe(1);
    tf.dispose([x, y]);
  });
});
