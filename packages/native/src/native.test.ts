import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { batchMatMulOp, checkConformance, initBackend, linearOp } from '@peftjs/core';
import { loraLinearOp } from '@peftjs/lora';
import { installNativeKernels, loadNative, nativeStatus, uninstallNativeKernels, type NativeIsa } from './index';
import { expectFlatMemory } from '../../../tools/testing/ops';

// The native BatchMatMul on the wasm backend against tfjs's cpu backend: forward and gradients, every
// micro-kernel this CPU has, odd sizes, batches with broadcasting. Skipped when the addon is not built.
const onWasm = tf.getBackend() === 'wasm';
const first = onWasm ? installNativeKernels() : { installed: false, reason: 'tests run on the wasm backend only', threads: 0, isa: '' };
const skip = !first.installed;
const why = skip ? ` (skipped: ${first.reason})` : '';
const isas: NativeIsa[] = loadNative().binding?.info().supportedIsas ?? [];

let seed = 1;
const rand = (n: number) => Float32Array.from({ length: n }, () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 31) - 1);

interface Case { a: number[]; b: number[]; ta?: boolean; tb?: boolean }

/** Runs f on the cpu backend with copies of the inputs, returning plain arrays. */
async function onCpu(inputs: Float32Array[], shapes: number[][], f: (...xs: tf.Tensor[]) => tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend('cpu');
  try {
    const xs = inputs.map((v, i) => tf.tensor(v, shapes[i]));
    const ys = f(...xs);
    const out = ys.map((y) => y.dataSync() as Float32Array);
    tf.dispose([...xs, ...ys]);
    return out;
  } finally {
    await tf.setBackend('wasm');
  }
}

function onWasmNow(inputs: Float32Array[], shapes: number[][], f: (...xs: tf.Tensor[]) => tf.Tensor[]): Float32Array[] {
  const xs = inputs.map((v, i) => tf.tensor(v, shapes[i]));
  const ys = f(...xs);
  const out = ys.map((y) => y.dataSync() as Float32Array);
  tf.dispose([...xs, ...ys]);
  return out;
}

function relErr(ref: Float32Array, got: Float32Array): number {
  expect(got.length).toBe(ref.length);
  let scale = 1e-12;
  let d = 0;
  for (let i = 0; i < ref.length; i++) {
    scale = Math.max(scale, Math.abs(ref[i]));
    d = Math.max(d, Math.abs(ref[i] - got[i]));
  }
  return d / scale;
}

const fwd = (c: Case) => (a: tf.Tensor, b: tf.Tensor) => [tf.matMul(a, b, c.ta, c.tb)];
/** The reference: both operands broadcast to the output's batch shape explicitly (tfjs's cpu kernel
 * does not broadcast [2, 1] against [1, 3]). */
const fwdRef = (c: Case) => (a: tf.Tensor, b: tf.Tensor) => {
  const lead = tf.broadcast_util.assertAndGetBroadcastShape(c.a.slice(0, -2), c.b.slice(0, -2));
  const full = (x: tf.Tensor) => tf.broadcastTo(x, [...lead, ...x.shape.slice(-2)]);
  return [tf.matMul(full(a), full(b), c.ta, c.tb)];
};
/** the product and the gradients of Σ w ⊙ (a·b) with respect to a and b (tfjs's own matMul gradient) */
const withGrads = (c: Case, w: Float32Array) => (a: tf.Tensor, b: tf.Tensor) => {
  const y = tf.matMul(a, b, c.ta, c.tb);
  const wt = tf.tensor(w, y.shape);
  const [ga, gb] = tf.grads((x: tf.Tensor, z: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, z, c.ta, c.tb), wt)))([a, b]);
  wt.dispose();
  return [y, ga, gb];
};

const twoD: Case[] = [];
// (300·40·8 and 77·9·2 are narrow: the addon computes them transposed, Cᵀ = Bᵀ·Aᵀ)
for (const [m, k, n] of [[1, 1, 1], [3, 17, 5], [1, 257, 3], [129, 257, 17], [257, 3, 129], [33, 129, 257], [300, 40, 8], [77, 9, 2]]) {
  for (const ta of [false, true]) for (const tb of [false, true]) twoD.push({ a: ta ? [k, m] : [m, k], b: tb ? [n, k] : [k, n], ta, tb });
}
const batched: Case[] = [
  { a: [4, 17, 33], b: [4, 33, 3] },
  { a: [3, 100, 16], b: [3, 5, 16], tb: true },
  { a: [4, 33, 17], b: [4, 3, 33], ta: true, tb: true },
  { a: [1, 5, 7], b: [3, 7, 9] },
  { a: [3, 5, 7], b: [1, 7, 9], tb: false },
  { a: [2, 1, 5, 7], b: [1, 3, 7, 9] },
  { a: [2, 3, 129, 64], b: [3, 129, 64], tb: true },
  { a: [8, 4, 128, 64], b: [8, 4, 64, 128] },
  { a: [2, 3, 5, 7], b: [7, 4] },
  { a: [0, 5, 7], b: [0, 7, 2] },
  { a: [3, 5, 0], b: [3, 0, 2] },
];
const outSize = (c: Case) => tf.util.sizeFromShape(tf.matMul(tf.zeros(c.a), tf.zeros(c.b), c.ta, c.tb).shape);

describe(`native BatchMatMul on wasm against the cpu backend${why}`, () => {
  afterAll(() => uninstallNativeKernels());

  it.skipIf(skip)('installs with a reason, ISA and threads', () => {
    expect(first).toMatchObject({ installed: true });
    expect(first.threads).toBeGreaterThanOrEqual(1);
    expect(['AVX-512', 'AVX2', 'scalar']).toContain(first.isa);
    expect(nativeStatus().installed).toBe(true);
  });

  for (const isa of isas) {
    for (const threads of [1, 3]) {
      it.skipIf(skip)(`forward, 2-D and batched, ${isa}, ${threads} thread(s)`, async () => {
        installNativeKernels({ isa, threads });
        expect(nativeStatus()).toMatchObject({ isa, threads });
        for (const c of [...twoD, ...batched]) {
          const a = rand(tf.util.sizeFromShape(c.a));
          const b = rand(tf.util.sizeFromShape(c.b));
          const [got] = onWasmNow([a, b], [c.a, c.b], fwd(c));
          const [ref] = await onCpu([a, b], [c.a, c.b], fwdRef(c));
          expect(relErr(ref, got), JSON.stringify(c)).toBeLessThanOrEqual(1e-5);
        }
        installNativeKernels({ isa: 'auto', threads: first.threads });
      });
    }
  }

  // (tfjs's BatchMatMul gradient does not reduce over broadcast batch dims: same-batch cases only)
  it.skipIf(skip)("gradients through tfjs's matMul gradient (every transposed form)", async () => {
    for (const c of [...twoD, ...batched.filter((x) => tf.util.arraysEqual(x.a.slice(0, -2), x.b.slice(0, -2)))]) {
      const a = rand(tf.util.sizeFromShape(c.a));
      const b = rand(tf.util.sizeFromShape(c.b));
      const w = rand(outSize(c));
      const got = onWasmNow([a, b], [c.a, c.b], withGrads(c, w));
      const ref = await onCpu([a, b], [c.a, c.b], withGrads(c, w));
      for (let i = 0; i < 3; i++) expect(relErr(ref[i], got[i]), `${JSON.stringify(c)} output ${i}`).toBeLessThanOrEqual(1e-5);
    }
  });

  it.skipIf(skip)('fused matMul (bias, relu) matches the cpu backend', async () => {
    for (const act of ['linear', 'relu'] as const) {
      for (const [ta, tb] of [[false, false], [true, true]]) {
        const aShape = ta ? [2, 19, 7] : [2, 7, 19];
        const bShape = tb ? [2, 11, 19] : [2, 19, 11];
        const a = rand(tf.util.sizeFromShape(aShape));
        const b = rand(tf.util.sizeFromShape(bShape));
        const bias = rand(11);
        const f = (x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) => [tf.fused.matMul({ a: x as tf.Tensor3D, b: y as tf.Tensor3D, transposeA: ta, transposeB: tb, bias: z, activation: act })];
        const [got] = onWasmNow([a, b, bias], [aShape, bShape, [11]], f);
        const [ref] = await onCpu([a, b, bias], [aShape, bShape, [11]], f);
        expect(relErr(ref, got)).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it.skipIf(skip)("the matmul fast paths (core's Linear and BatchMatMul, @peftjs/lora's LoraLinear) conform with the native kernel under them", async () => {
    const cases = [
      () => checkConformance(linearOp, () => ({ x: tf.randomNormal([2, 17, 33]), weight: tf.randomNormal([129, 33]), bias: tf.randomNormal([129]) }), {}, { rtol: 1e-5 }),
      () => checkConformance(loraLinearOp, () => ({ base: tf.randomNormal([3, 5, 65]), x: tf.randomNormal([3, 5, 31]), loraA: tf.randomNormal([8, 31]), loraB: tf.randomNormal([65, 8]) }), { scaling: 2 }, { rtol: 1e-5 }),
      () => checkConformance(batchMatMulOp, () => ({ a: tf.randomNormal([2, 4, 17, 64]), b: tf.randomNormal([2, 4, 64, 17]) }), {}, { rtol: 1e-5 }),
    ];
    for (const run of cases) {
      const r = await run();
      expect(r.ok, JSON.stringify(r)).toBe(true);
    }
  });

  it.skipIf(skip)('defers what it does not handle to the original kernel (int32)', () => {
    const a = tf.tensor2d([[1, 2]], [1, 2], 'int32');
    const b = tf.tensor2d([[3], [4]], [2, 1], 'int32');
    expect(() => tf.matMul(a, b)).toThrow(/float32/);
    tf.dispose([a, b]);
  });

  it.skipIf(skip)('frees what it allocates, and survives the wasm heap growing between and inside calls', async () => {
    const be = tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } };
    const a = tf.randomNormal([64, 96]);
    const b = tf.randomNormal([96, 48]);
    const expected = await onCpu([a.dataSync() as Float32Array, b.dataSync() as Float32Array], [[64, 96], [96, 48]], (x, y) => [tf.matMul(x, y)]);
    const step = () => {
      const g = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.matMul(x, y, false, false)))([a, b]);
      tf.dispose(g);
    };
    expectFlatMemory(step);

    const heap0 = be.wasm.HEAPU8.buffer.byteLength;
    const big: tf.Tensor[] = [];
    for (let i = 0; i < 3; i++) {
      big.push(tf.fill([heap0 / 4 / 2 + 1024], 1)); // each about half the heap: it must grow
      const y = tf.matMul(a, b);
      expect(relErr(expected[0], y.dataSync() as Float32Array)).toBeLessThanOrEqual(1e-5);
      y.dispose();
    }
    // an output bigger than the heap's free space: the heap grows inside the kernel's makeOutput
    const heap1 = be.wasm.HEAPU8.buffer.byteLength;
    const u = tf.randomNormal([2048, 1]);
    const v = tf.randomNormal([1, heap1 / 4 / 2048 + 64]);
    const uv = tf.matMul(u, v);
    expect(be.wasm.HEAPU8.buffer.byteLength).toBeGreaterThan(heap1);
    const [ref] = await onCpu([u.dataSync() as Float32Array, v.dataSync() as Float32Array], [u.shape, v.shape], (x, y) => [tf.matMul(x, y)]);
    expect(relErr(ref, uv.dataSync() as Float32Array)).toBeLessThanOrEqual(1e-5);
    expect(be.wasm.HEAPU8.buffer.byteLength).toBeGreaterThan(heap0);
    tf.dispose([a, b, u, v, uv, ...big]);
  });

  it.skipIf(skip)('initBackend reports it, and native: false puts the wasm kernel back', async () => {
    const r = await initBackend({ prefer: 'wasm' });
    expect(r.reason).toMatch(/WebAssembly \(SIMD\) \+ native matmul \((AVX-512|AVX2|scalar), \d+ threads\)/);
    expect(r.native).toMatchObject({ installed: true });
    const off = await initBackend({ prefer: 'wasm', native: false });
    expect(off.native).toMatchObject({ installed: false });
    expect(nativeStatus().installed).toBe(false);
    installNativeKernels();
    expect(nativeStatus().installed).toBe(true);
  });
});
