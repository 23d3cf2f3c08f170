// peftjs.Attention (flash attention) and peftjs.Rope WGSL fast paths against their tfjs references on
// the webgpu backend (lavapipe in CI); skipped where there is no WebGPU adapter.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { checkConformance, initBackend } from '@peftjs/core';
import { attentionOp } from './common';
import { ropeOp } from './rope';
import { MAX_HEAD_DIM, flashForward, flashSupports } from './kernels/flash_attention';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch(() => undefined);
const onGpu = report?.backend === 'webgpu' && tf.getBackend() === 'webgpu';

interface Case {
  name: string;
  b: number;
  h: number;
  kvH: number;
  t: number;
  s: number;
  hd: number;
  causal: boolean;
  /** keep-vector rows (length s), or none */
  keep?: number[][];
  /** q [B, T, H, hd], k/v [B, S, kvH, hd] */
  tokenMajor?: boolean;
}

const pad = (s: number, zeros: number[]) => Array.from({ length: s }, (_, j) => (zeros.includes(j) ? 0 : 1));

const cases: Case[] = [
  { name: 'MHA, T = S = 5, hd 8', b: 1, h: 2, kvH: 2, t: 5, s: 5, hd: 8, causal: true },
  // left padding: the first query rows of batch 1 see no key at all (zero output, zero gradient)
  { name: 'GQA 3, left padding with blind rows, hd 12, batch 2', b: 2, h: 3, kvH: 1, t: 7, s: 7, hd: 12, causal: true, keep: [pad(7, []), pad(7, [0, 1, 2])] },
  { name: 'GQA 7, T = 1 against a past of 8, padded keys, hd 16', b: 1, h: 7, kvH: 1, t: 1, s: 9, hd: 16, causal: true, keep: [pad(9, [0, 4])] },
  { name: 'GQA 3, decode split over S (T = 1, S = 130), hd 32', b: 1, h: 6, kvH: 2, t: 1, s: 130, hd: 32, causal: true, keep: [pad(130, [0, 1, 77])] },
  { name: 'GQA 3, past 33 (S > T), padding in the past, hd 64, batch 2', b: 2, h: 6, kvH: 2, t: 4, s: 37, hd: 64, causal: true, keep: [pad(37, [3, 4, 35]), pad(37, [])] },
  { name: 'MHA, 70 rows and keys (2 tiles each, split dK/dV), hd 8', b: 1, h: 2, kvH: 2, t: 70, s: 70, hd: 8, causal: true, keep: [pad(70, [0, 69])] },
  { name: 'GQA 2, not causal, hd 4', b: 1, h: 2, kvH: 1, t: 3, s: 3, hd: 4, causal: false },
  { name: 'token-major, GQA 3, blind rows, hd 16, batch 2', b: 2, h: 3, kvH: 1, t: 6, s: 6, hd: 16, causal: true, keep: [pad(6, [0, 1]), pad(6, [])], tokenMajor: true },
  { name: 'token-major, GQA 7, 70 rows (split dK/dV), hd 12', b: 1, h: 7, kvH: 1, t: 10, s: 10, hd: 12, causal: true, tokenMajor: true },
  { name: 'token-major, MHA, 70 keys, hd 64', b: 1, h: 2, kvH: 2, t: 70, s: 70, hd: 64, causal: true, keep: [pad(70, [0])], tokenMajor: true },
];

function makeInputs(c: Case) {
  return () => ({
    q: tf.randomNormal(c.tokenMajor ? [c.b, c.t, c.h, c.hd] : [c.b, c.h, c.t, c.hd], 0, (1 / Math.sqrt(c.hd)) * 2, 'float32', 11),
    k: tf.randomNormal(c.tokenMajor ? [c.b, c.s, c.kvH, c.hd] : [c.b, c.kvH, c.s, c.hd], 0, 1, 'float32', 12),
    v: tf.randomNormal(c.tokenMajor ? [c.b, c.s, c.kvH, c.hd] : [c.b, c.kvH, c.s, c.hd], 0, 1, 'float32', 13),
    keep: c.keep ? tf.tensor2d(c.keep, [c.b, c.s], 'float32') : undefined,
  });
}

describe.skipIf(!onGpu)('flash attention (webgpu)', () => {
  for (const c of cases) {
    it(`conforms to the reference: ${c.name}`, async () => {
      const before = tf.memory().numTensors;
      const r = await checkConformance(attentionOp, makeInputs(c), { causal: c.causal, tokenMajor: !!c.tokenMajor }, { rtol: 1e-4 });
      console.log(`${c.name}: fwd ${r.forwardMaxAbsDiff.toExponential(2)} grads ${JSON.stringify(Object.fromEntries(Object.entries(r.gradMaxAbsDiff).map(([k, v]) => [k, v.toExponential(2)])))}`);
      expect(r.ok).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('a query row that sees no key outputs zeros; its logsumexp marks it', async () => {
    const c = cases[1];
    const { q, k, v, keep } = makeInputs(c)();
    const [o, lse] = flashForward(tf.backend(), q, k, v, keep, true).map((i) => tf.engine().makeTensorFromTensorInfo(i));
    const ov = await o.data();
    const lv = await lse.data();
    // batch 1, positions 0..2 see no key (rows of [B, T, H·hd])
    const row = c.h * c.hd;
    for (let t = 0; t < 3; t++) expect(Array.from(ov.slice((c.t + t) * row, (c.t + t + 1) * row)).every((x) => x === 0)).toBe(true);
    expect(Array.from(ov.slice((c.t + 3) * row, (c.t + 4) * row)).some((x) => x !== 0)).toBe(true);
    expect(lv[c.h * c.t]).toBeGreaterThan(1e38);
    expect(Number.isFinite(lv[0])).toBe(true);
    tf.dispose([q, k, v, keep!, o, lse]);
  });

  it('head dims the kernels do not take run the reference', () => {
    const q = { shape: [1, 2, 3, MAX_HEAD_DIM * 2] };
    const k = { shape: [1, 2, 3, MAX_HEAD_DIM * 2] };
    expect(flashSupports(q, k, k)).toBe(false);
    expect(flashSupports({ shape: [1, 2, 3, 6] }, { shape: [1, 2, 3, 6] }, { shape: [1, 2, 3, 6] })).toBe(false);
    expect(flashSupports({ shape: [1, 2, 3, 64] }, { shape: [1, 2, 3, 64] }, { shape: [1, 2, 3, 64] })).toBe(true);
  });

  it('a wrong mask fails conformance (the test can fail)', async () => {
    const c = cases[1];
    const inputs = makeInputs(c);
    // the reference is told causal, the kernel is not: compare the two by hand
    const x = inputs();
    const ref = attentionOp.reference(x, { causal: true });
    const fast = attentionOp(x, { causal: false });
    const d = (await tf.max(tf.abs(tf.sub(ref, fast))).data())[0];
    expect(d).toBeGreaterThan(1e-2);
    tf.dispose([ref, fast, x.q, x.k, x.v, x.keep!]);
  });
});

describe.skipIf(!onGpu)('RoPE (webgpu)', () => {
  for (const [name, cb, transpose, tokenMajor] of [
    ['shared table', 1, false, false],
    ['per-batch table (position ids)', 2, false, false],
    ['transposed (the gradient)', 2, true, false],
    ['token-major x [B, T, H, D], tables [1, T, 1, D]', 1, false, true],
    ['token-major, per-batch, transposed', 2, true, true],
  ] as const) {
    it(`conforms to the reference: ${name}`, async () => {
      const before = tf.memory().numTensors;
      const table = tokenMajor ? [cb, 5, 1, 8] : [cb, 1, 5, 8];
      const make = () => ({
        x: tf.randomNormal(tokenMajor ? [2, 5, 3, 8] : [2, 3, 5, 8], 0, 1, 'float32', 1),
        cos: tf.randomNormal(table, 0, 1, 'float32', 2),
        sin: tf.randomNormal(table, 0, 1, 'float32', 3),
      });
      const r = await checkConformance(ropeOp, make, { transpose }, { rtol: 1e-5 });
      expect(r.ok).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    });
  }
});
