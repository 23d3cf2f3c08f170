// The WGSL matmul (./matmul.ts) on the webgpu backend (lavapipe in CI) against tfjs's matMul: every
// transpose combination, odd sizes, one row, K = 1, split K, bias / beta·C epilogues, batch broadcasting,
// each tile; no leaked tensors. Skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../backend';
import { MATMUL_TILES, planMatmul, runMatmul, type MatmulTileName } from './matmul';
import { toTensor } from './runner';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

async function maxRelDiff(got: tf.Tensor, want: tf.Tensor): Promise<number> {
  expect(got.shape).toEqual(want.shape);
  const [g, w] = await Promise.all([got.data(), want.data()]);
  let scale = 1e-6;
  let d = 0;
  for (let i = 0; i < w.length; i++) {
    scale = Math.max(scale, Math.abs(w[i]));
    d = Math.max(d, Math.abs(g[i] - w[i]));
    if (Number.isNaN(g[i])) return Infinity;
  }
  return d / scale;
}

interface Case {
  name: string;
  a: number[];
  b: number[];
  transA?: boolean;
  transB?: boolean;
  bias?: boolean;
  c?: 'full' | 'one';
  alpha?: number;
  beta?: number;
  tile?: MatmulTileName;
  splits?: number;
}

async function check(cs: Case): Promise<void> {
  const a = tf.randomNormal(cs.a, 0, 1, 'float32', 1);
  const b = tf.randomNormal(cs.b, 0, 1, 'float32', 2);
  const want0 = tf.matMul(a, b, cs.transA, cs.transB);
  const [M, N] = want0.shape.slice(-2);
  const bias = cs.bias ? tf.randomNormal([N], 0, 1, 'float32', 3) : undefined;
  const c = cs.c ? tf.randomNormal(cs.c === 'full' ? want0.shape : [M, N], 0, 1, 'float32', 4) : undefined;
  const alpha = cs.alpha ?? 1;
  const beta = cs.beta ?? 1;
  const want = tf.tidy(() => {
    let y = tf.mul(want0, alpha);
    if (bias) y = tf.add(y, bias);
    if (c) y = tf.add(y, tf.mul(c, beta));
    return y;
  });
  const before = tf.memory().numTensors;
  // compact: false — the vec4 load paths that a hardware GPU runs, here on lavapipe too
  const got = toTensor(runMatmul(undefined, { a, b, transA: cs.transA, transB: cs.transB, bias, c, alpha, beta, tile: cs.tile ?? 't32x32', splits: cs.splits, compact: false }));
  expect(tf.memory().numTensors).toBe(before + 1);
  const d = await maxRelDiff(got, want);
  expect(d, `${cs.name}: max diff ${d}`).toBeLessThan(1e-5);
  tf.dispose([a, b, want0, want, got, ...(bias ? [bias] : []), ...(c ? [c] : [])]);
}

describe.skipIf(!onGpu)('WGSL matmul (webgpu)', () => {
  const shapes: [string, number, number, number][] = [
    ['aligned, two tiles each way', 64, 72, 40],
    ['odd 37×29×19', 37, 29, 19],
    ['one row', 1, 20, 24],
    ['K = 1', 9, 13, 1],
    ['N = 1', 17, 1, 12],
  ];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      it.each(shapes)(`trans ${+transA}${+transB}: %s`, async (name, M, N, K) => {
        await check({ name, a: transA ? [K, M] : [M, K], b: transB ? [N, K] : [K, N], transA, transB });
      });
    }
  }

  // each tile on the Linear layout (x·Wᵀ + bias, vec4 loads) with the beta·C epilogue, on sizes that
  // are not multiples of it; the scalar-load paths once more on a skinny tile
  it.each(Object.keys(MATMUL_TILES) as MatmulTileName[])('tile %s: x·Wᵀ + bias + beta·C on odd sizes', async (tile) => {
    await check({ name: tile, a: [45, 36], b: [140, 36], transB: true, bias: true, c: 'full', alpha: 0.5, beta: 2, tile });
  });
  it('skinny tile, scalar loads, transposed A', async () => {
    await check({ name: 't128x8 scalar', a: [33, 45], b: [33, 7], transA: true, tile: 't128x8' });
  });

  it.each([
    { name: 'split K, vec4', a: [24, 300], b: [300, 20], splits: 3, bias: true, c: 'full' as const, alpha: 2, beta: 0.5 },
    { name: 'split K, scalar, transposed', a: [301, 23], b: [21, 301], transA: true, transB: true, splits: 4, bias: true },
    { name: 'split K with more splits than K-steps', a: [5, 20], b: [20, 6], splits: 8, tile: 't32x32' as const },
    { name: 'split K, batched, b broadcast, c of one entry', a: [3, 9, 70], b: [70, 12], splits: 3, bias: true, c: 'one' as const, beta: -1 },
    { name: 'split K, batched, scalar, c per entry', a: [2, 70, 9], b: [2, 70, 11], transA: true, splits: 2, c: 'full' as const },
  ])('$name', async (cs) => {
    await check(cs);
  });

  it.each([
    { name: 'equal batches', a: [3, 17, 9], b: [3, 9, 11] },
    { name: 'b broadcast (batch 1)', a: [2, 3, 17, 9], b: [1, 1, 11, 9], transB: true },
    { name: 'b rank 2', a: [4, 17, 9], b: [9, 12] },
    { name: 'a broadcast, transposed', a: [1, 9, 17], b: [5, 9, 12], transA: true },
    { name: 'batched with c of one entry', a: [3, 8, 16], b: [3, 16, 8], c: 'one' as const, beta: -1 },
    { name: 'attention-like', a: [6, 64, 16], b: [6, 64, 16], transB: true },
  ])('batched: $name', async (cs) => {
    await check(cs);
  });

  it('throws a PeftError naming the shapes on a mismatch', () => {
    const a = tf.zeros([3, 4]);
    const b = tf.zeros([5, 6]);
    expect(() => runMatmul(undefined, { a, b })).toThrow(/inner sizes 4 and 5/);
    const c = tf.zeros([2, 3, 4]);
    const d = tf.zeros([3, 4, 6]);
    expect(() => runMatmul(undefined, { a: c, b: d })).toThrow(/batch dims/);
    tf.dispose([a, b, c, d]);
  });

  it('plans big tiles for big products and split K for a long K', () => {
    expect(planMatmul(2048, 49152, 576, 1).tileName).toBe('t128x128');
    const lmHeadDx = planMatmul(2048, 576, 49152, 1);
    expect(lmHeadDx.splits).toBeGreaterThan(1);
    expect(planMatmul(2048, 8, 576, 1).tileName).toBe('t128x8');
    expect(planMatmul(8, 576, 2048, 1).tileName).toBe('t8x128');
  });
});
