import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { expectFastPathExact } from '../../../tools/testing/ops';
import { installNativeKernels, installedNativeKernels, MIN_ELEMENTS, nativeStatus, NATIVE_KERNELS, uninstallNativeKernels } from './index';

// The native element-wise / reduction kernels on the wasm backend against tfjs's cpu backend: broadcasting
// patterns, odd sizes, sizes below (the original kernel) and above MIN_ELEMENTS. Skipped without the addon.
const onWasm = tf.getBackend() === 'wasm';
const first = onWasm ? installNativeKernels() : { installed: false, reason: 'tests run on the wasm backend only', threads: 0, isa: '' };
const skip = !first.installed;
const why = skip ? ` (skipped: ${first.reason})` : '';

let seed = 7;
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => scale * (((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 31) - 1));

type F = (...xs: tf.Tensor[]) => tf.Tensor;

/** Worst element-wise relative error; with `global`, relative to the largest |reference| (for sums that cancel). */
async function compare(f: F, shapes: number[][], tol: number, scale = 1, label = '', global = false): Promise<void> {
  const inputs = shapes.map((s) => rand(tf.util.sizeFromShape(s), scale));
  const run = () => {
    const xs = inputs.map((v, i) => tf.tensor(v, shapes[i]));
    const y = f(...xs);
    const out = { shape: y.shape, data: y.dataSync() as Float32Array };
    tf.dispose([...xs, y]);
    return out;
  };
  const got = run();
  await tf.setBackend('cpu');
  let ref: { shape: number[]; data: Float32Array };
  try {
    ref = run();
  } finally {
    await tf.setBackend('wasm');
  }
  const msg = `${label} ${JSON.stringify(shapes)}`;
  expect(got.shape, msg).toEqual(ref.shape);
  expect(got.data.length, msg).toBe(ref.data.length);
  let worst = 0;
  const top = ref.data.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-30);
  for (let i = 0; i < ref.data.length; i++) {
    const r = ref.data[i];
    const d = Math.abs(r - got.data[i]) / (global ? top : Math.max(Math.abs(r), 1e-30));
    if (!(d <= worst)) worst = d;
  }
  expect(worst, msg).toBeLessThanOrEqual(tol);
}

const big = MIN_ELEMENTS; // 32768

describe(`native element-wise kernels on wasm against the cpu backend${why}`, () => {
  afterAll(() => {
    uninstallNativeKernels();
    installNativeKernels();
  });

  it.skipIf(skip)('are installed with the matmul', () => {
    expect(nativeStatus().installed).toBe(true);
    for (const k of ['Exp', 'Multiply', 'Add', 'Sub', 'Transpose', 'Sum', 'Max']) expect(NATIVE_KERNELS).toContain(k);
  });

  for (const threads of [1, 3]) {
    it.skipIf(skip)(`Exp (below and above the threshold, odd sizes, ${threads} thread(s))`, async () => {
      installNativeKernels({ threads });
      for (const shape of [[7], [big - 1], [big + 13], [1024, 4096 + 3], [3, 5, 4099]]) {
        await compare((x) => tf.exp(x), [shape], 2e-6, 20, 'exp');
        await compare((x) => tf.exp(tf.mul(x, 5)), [shape], 2e-6, 20, 'exp wide');
      }
      installNativeKernels({ threads: first.threads });
    });
  }

  it.skipIf(skip)('Exp at the edges: overflow, underflow, NaN, ±0', () => {
    const v = new Float32Array(big + 5).fill(0.5);
    const special = [100, 88.7, 88.72, -87.3, -95, -103, -104, -200, NaN, 0, -0, Infinity, -Infinity, 1e-8];
    special.forEach((x, i) => (v[i] = x));
    const got = tf.exp(tf.tensor(v)).dataSync();
    special.forEach((x, i) => {
      const want = Math.fround(Math.exp(v[i])); // of the float32 input
      if (Number.isNaN(want)) expect(got[i]).toBeNaN();
      else if (!Number.isFinite(want)) expect(got[i]).toBe(want);
      else if (want === 0 || Math.abs(want) < 1.2e-38) expect(Math.abs(got[i] - want)).toBeLessThanOrEqual(Math.abs(want) * 2e-6 + 1e-44);
      else expect(Math.abs(got[i] - want) / want, String(x)).toBeLessThanOrEqual(2e-6);
    });
  });

  it.skipIf(skip)('Add, Sub, Multiply: same shape, scalars, row and column broadcasting, both orders', async () => {
    const pairs: number[][][] = [
      [[7, 3], [7, 3]], // below the threshold
      [[1024, 33], [1024, 33]],
      [[big + 1], [big + 1]],
      [[8, 128, 688], []],
      [[], [8, 128, 257]],
      [[8, 128, 256], [256]],
      [[256], [8, 128, 256]],
      [[8, 128, 256], [8, 128, 1]],
      [[1024, 1], [1024, 4099]],
      [[8, 4, 128, 64], [1, 1, 128, 64]],
      [[8, 2, 256, 128], [8, 2, 256, 1]],
      [[1024, 1], [4096]], // outer: a per row, b per column
      [[8, 1, 128], [8, 64, 128]], // not handled natively (middle broadcast): the original kernel
      [[8, 64, 1], [1, 64, 128]],
    ];
    const ops: [string, F][] = [['add', (a, b) => tf.add(a, b)], ['sub', (a, b) => tf.sub(a, b)], ['mul', (a, b) => tf.mul(a, b)]];
    for (const [name, f] of ops) for (const p of pairs) await compare(f, p, 1e-6, 3, name);
  });

  it.skipIf(skip)('Transpose: 2-D, [0,1,3,2], [0,2,1,3], size-1 axes, other perms (the original kernel)', async () => {
    const cases: [number[], number[]][] = [
      [[257, 131], [1, 0]],
      [[8, 2, 256, 128], [0, 1, 3, 2]],
      [[8, 128, 4, 64], [0, 2, 1, 3]],
      [[8, 4, 128, 64], [0, 2, 1, 3]],
      [[1, 33, 1, 1025], [0, 3, 2, 1]],
      [[3, 5, 7, 11, 13], [0, 3, 4, 1, 2]],
      [[17, 19, 101], [2, 0, 1]],
      [[17, 19, 101], [1, 2, 0]],
      [[17, 19, 101], [2, 1, 0]], // not a swap of adjacent groups: the original kernel
      [[9, 7], [1, 0]],
      [[64, 512], [0, 1]],
    ];
    for (const [shape, perm] of cases) await compare((x) => tf.transpose(x, perm), [shape], 0, 1, `transpose ${perm}`);
  });

  it.skipIf(skip)('Sum and Max over trailing axes (keepDims), other axes through the original kernel', async () => {
    const cases: [number[], number | number[], boolean][] = [
      [[1024, 4096], -1, true],
      [[1024, 4099], 1, false],
      [[8, 128, 256], -1, false],
      [[8, 16, 64, 33], [2, 3], true],
      [[big + 3], 0, false],
      [[40, 1000], 0, false], // leading axis: the original kernel
      [[7, 9], -1, true], // small
    ];
    for (const [shape, axis, keep] of cases) {
      await compare((x) => tf.max(x, axis, keep), [shape], 0, 5, 'max');
      // positive inputs (softmax's denominators) and signed ones; float32 sums in another order differ in rounding
      await compare((x) => tf.sum(tf.abs(x), axis, keep), [shape], 1e-6, 5, 'sum+');
      // (the cpu backend's sequential float32 sum over a 32K row is itself off by ≈ 5e-6 of the largest sum)
      const rowLen = tf.util.parseAxisParam(axis, shape).reduce((m, a) => m * shape[a], 1);
      await compare((x) => tf.sum(x, axis, keep), [shape], rowLen > 8192 ? 1e-5 : 1e-6, 5, 'sum±', true);
    }
  });

  it.skipIf(skip)('falls back for int32 and for the small, and frees what it allocates', () => {
    const a = tf.tensor1d(Int32Array.from({ length: big + 1 }, (_, i) => i), 'int32');
    const aa = tf.add(a, a);
    expect(aa.dtype).toBe('int32');
    expect(Array.from(aa.dataSync().slice(0, 3))).toEqual([0, 2, 4]);
    aa.dispose();
    const x = tf.randomNormal([64, 1024]);
    const step = () => tf.dispose(tf.tidy(() => [tf.exp(x), tf.add(x, x), tf.mul(x, 2), tf.sub(x, tf.max(x, -1, true)), tf.transpose(x), tf.sum(x, -1), x.clone()]));
    step();
    const before = tf.memory();
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(before.numTensors);
    expect(tf.memory().numBytes).toBe(before.numBytes);
    tf.dispose([a, x]);
  });

  it.skipIf(skip)('kernels: selects which to replace; uninstall puts the originals back', () => {
    installNativeKernels({ kernels: ['BatchMatMul'] });
    expect(tf.getKernel('Exp', 'wasm')?.kernelFunc.name).not.toBe('');
    const natExp = tf.getKernel('Exp', 'wasm')!.kernelFunc;
    installNativeKernels();
    expect(tf.getKernel('Exp', 'wasm')!.kernelFunc).not.toBe(natExp);
    uninstallNativeKernels();
    expect(tf.getKernel('Exp', 'wasm')!.kernelFunc).toBe(natExp);
    installNativeKernels();
  });
});

describe(`native peftjs.Rope on wasm${why}`, () => {
  it.skipIf(skip)('takes over the op registered by @peftjs/models and equals its reference bit for bit, gradients included', async () => {
    const { ropeOp } = await import('@peftjs/models');
    const { checkConformance } = await import('@peftjs/core');
    uninstallNativeKernels();
    installNativeKernels(); // the op's kernel exists now (imported above)
    expect(installedNativeKernels()).toContain('peftjs.Rope');
    for (const threads of [1, 3]) {
      installNativeKernels({ threads });
      for (const [xs, cs] of [[[8, 4, 128, 64], [1, 1, 128, 64]], [[3, 2, 97, 130], [3, 1, 97, 130]], [[2, 4, 1, 64], [1, 1, 1, 64]]]) {
        const make = () => ({ x: tf.randomNormal(xs, 0, 2, 'float32', 1), cos: tf.randomUniform(cs, -1, 1, 'float32', 2), sin: tf.randomUniform(cs, -1, 1, 'float32', 3) });
        for (const transpose of [false, true]) {
          const inputs = make();
          await expectFastPathExact(ropeOp, inputs, { transpose }, `x [${xs}], ${threads} thread(s), transpose ${transpose}`);
          tf.dispose(Object.values(inputs));
          const r = await checkConformance(ropeOp, make, { transpose }, { rtol: 1e-6 });
          expect(r.ok, JSON.stringify(r)).toBe(true);
        }
      }
    }
    installNativeKernels({ threads: first.threads });
  });
});
