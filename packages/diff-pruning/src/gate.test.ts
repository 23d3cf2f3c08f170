// The hard-concrete gate and the projection against their definitions (Louizos et al., 2018; Guo et al., 2021):
// closed forms of P(z = 0), P(z = 1), E[z] and E[L0], the deterministic gate, the exact top-k projection.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { manualSeed } from '@peftjs/core';
import { DEFAULT_GATE, deterministicGate, expectedL0, gateOpenProbability, keptCount, projectDiff, sampleGate, scatterDiff, structuredExpectedL0 } from './index';

const { gamma, zeta, beta } = DEFAULT_GATE;
const sig = (x: number) => 1 / (1 + Math.exp(-x));
const logit = (p: number) => Math.log(p / (1 - p));
/** P(z > t) for t in (0, 1): s̄ = s(ζ−γ)+γ > t  ⇔  L > β·logit((t−γ)/(ζ−γ)) − log α, L logistic. */
const pAbove = (t: number, a: number) => sig(a - beta * logit((t - gamma) / (zeta - gamma)));

async function values(t: tf.Tensor): Promise<number[]> {
  const v = Array.from(await t.data());
  t.dispose();
  return v;
}

describe('hard-concrete gate', () => {
  it('the deterministic gate is min(1, max(0, sigmoid(log α)·(ζ−γ)+γ))', async () => {
    const a = [-8, -2.4, -1, 0, 0.5, 2.4, 8];
    const got = await values(deterministicGate(tf.tensor1d(a)));
    const want = a.map((x) => Math.min(1, Math.max(0, sig(x) * (zeta - gamma) + gamma)));
    got.forEach((g, i) => expect(g, `log α ${a[i]}`).toBeCloseTo(want[i], 6));
    expect(got[0]).toBe(0); // exact zeros and ones: what makes the gate sparse
    expect(got[6]).toBe(1);
  });

  it('a sample with given u is min(1, max(0, sigmoid((log u − log(1−u) + log α)/β)·(ζ−γ)+γ))', async () => {
    const a = [-3, -0.5, 0, 1, 4];
    const u = [0.02, 0.3, 0.5, 0.7, 0.99];
    const got = await values(sampleGate(tf.tensor1d(a), DEFAULT_GATE, tf.tensor1d(u)));
    got.forEach((g, i) => {
      const s = sig((Math.log(u[i]) - Math.log(1 - u[i]) + a[i]) / beta);
      expect(g, `u ${u[i]}`).toBeCloseTo(Math.min(1, Math.max(0, s * (zeta - gamma) + gamma)), 6);
    });
  });

  it('samples match the closed forms P(z = 0) = sigmoid(β·log(−γ/ζ) − log α), P(z = 1) and E[z]', async () => {
    manualSeed(7);
    const N = 200_000;
    for (const a of [-1.5, 0, 1.2]) {
      const z = sampleGate(tf.fill([N], a));
      const v = (await z.data()) as Float32Array;
      z.dispose();
      let zeros = 0;
      let ones = 0;
      let sum = 0;
      for (const x of v) {
        if (x === 0) zeros++;
        else if (x === 1) ones++;
        sum += x;
      }
      const p0 = sig(beta * Math.log(-gamma / zeta) - a);
      const p1 = sig(a - beta * Math.log((1 - gamma) / (zeta - 1)));
      // E[z] = ∫₀¹ P(z > t) dt (midpoint rule, 20k points)
      let ez = 0;
      for (let i = 0; i < 20_000; i++) ez += pAbove((i + 0.5) / 20_000, a) / 20_000;
      const tol = (p: number) => 5 * Math.sqrt((p * (1 - p)) / N);
      expect(Math.abs(zeros / N - p0), `P(z=0) at log α ${a}: ${zeros / N} vs ${p0}`).toBeLessThan(tol(p0));
      expect(Math.abs(ones / N - p1), `P(z=1) at log α ${a}: ${ones / N} vs ${p1}`).toBeLessThan(tol(p1));
      expect(Math.abs(sum / N - ez), `E[z] at log α ${a}: ${sum / N} vs ${ez}`).toBeLessThan(5 * Math.sqrt(0.25 / N));
      // the L0 penalty's per-entry term is exactly P(z ≠ 0)
      const open = await values(gateOpenProbability(tf.scalar(a)));
      expect(open[0]).toBeCloseTo(1 - p0, 6);
    }
  });

  it('E[L0] = Σ sigmoid(log α − β·log(−γ/ζ)), with gradient sigmoid′ per entry', async () => {
    const a = [-2, -0.3, 0, 0.7, 3, 5];
    const c = beta * Math.log(-gamma / zeta);
    const la = tf.tensor1d(a);
    const l0 = await values(expectedL0(la));
    expect(l0[0]).toBeCloseTo(a.reduce((s, x) => s + sig(x - c), 0), 5);
    const g = await values(tf.grad((x: tf.Tensor) => expectedL0(x))(la));
    g.forEach((v, i) => expect(v).toBeCloseTo(sig(a[i] - c) * (1 - sig(a[i] - c)), 6));
    // custom stretch and temperature enter the same formula
    const other = { gamma: -0.5, zeta: 1.5, beta: 0.5 };
    const l0b = await values(expectedL0(la, other));
    expect(l0b[0]).toBeCloseTo(a.reduce((s, x) => s + sig(x - 0.5 * Math.log(0.5 / 1.5)), 0), 5);
    la.dispose();
  });

  it('structured: E[L0] of δ ⊙ z ⊙ z_g = P(z_g ≠ 0)·Σ P(z_i ≠ 0), matching the count of nonzero products of samples', async () => {
    manualSeed(5);
    const a = tf.tensor1d([-1, 0, 0.5, 2, -0.3, 1.5]);
    const ag = tf.tensor1d([0.4]);
    const c = beta * Math.log(-gamma / zeta);
    const want = sig(0.4 - c) * [-1, 0, 0.5, 2, -0.3, 1.5].reduce((s, x) => s + sig(x - c), 0);
    const got = await values(structuredExpectedL0(a, ag));
    expect(got[0]).toBeCloseTo(want, 5);
    // Monte Carlo: N draws of (z, z_g); the mean number of nonzero z_i·z_g
    const N = 40_000;
    const z = sampleGate(tf.tile(a.reshape([1, 6]), [N, 1]));
    const zg = sampleGate(tf.fill([N, 1], 0.4));
    const nz = await values(tf.tidy(() => tf.sum(tf.cast(tf.notEqual(tf.mul(z, zg), 0), 'float32'))));
    tf.dispose([z, zg]);
    // the count per draw is at most 6: its standard deviation is below 3
    expect(Math.abs(nz[0] / N - want), `${nz[0] / N} vs ${want}`).toBeLessThan((5 * 3) / Math.sqrt(N));
    tf.dispose([a, ag]);
  });

  it('log α gets the gradient of the sample: zero where the gate is clipped, nonzero inside', async () => {
    const a = tf.tensor1d([-10, 0, 10]);
    const u = tf.tensor1d([0.5, 0.5, 0.5]);
    const g = await values(tf.grad((x: tf.Tensor) => tf.sum(sampleGate(x, DEFAULT_GATE, u)))(a));
    expect(g[0]).toBe(0);
    expect(g[2]).toBe(0);
    // d z / d log α at u = ½, log α = 0: s = ½, dz = (ζ−γ)·s(1−s)/β
    expect(g[1]).toBeCloseTo(((zeta - gamma) * 0.25) / beta, 5);
    tf.dispose([a, u]);
  });
});

describe('projection to an exact density', () => {
  it('keeps exactly round(density · numel) entries, the largest |diff|, indices ascending; ties to the lower index', async () => {
    manualSeed(3);
    for (const [shape, density] of [[[64, 48], 0.005], [[64, 48], 0.1], [[7, 5], 0.5], [[10], 1], [[33], 0.01]] as [number[], number][]) {
      const d = tf.randomNormal(shape, 0, 1, 'float32', 11);
      const { indices, values: vals } = projectDiff(d, density);
      const numel = shape.reduce((a, b) => a * b, 1);
      const k = Math.round(density * numel);
      expect(keptCount(density, numel)).toBe(k);
      expect(indices.shape).toEqual([k]);
      expect(indices.dtype).toBe('int32');
      const idx = Array.from(await indices.data());
      const v = Array.from(await vals.data());
      const all = Array.from(await d.data());
      for (let i = 1; i < k; i++) expect(idx[i]).toBeGreaterThan(idx[i - 1]);
      idx.forEach((j, i) => expect(v[i]).toBe(all[j]));
      const kept = new Set(idx);
      const minKept = Math.min(...idx.map((j) => Math.abs(all[j])));
      const maxDropped = Math.max(-Infinity, ...all.filter((_, j) => !kept.has(j)).map(Math.abs));
      expect(minKept).toBeGreaterThanOrEqual(maxDropped);
      tf.dispose([d, indices, vals]);
    }
    const ties = projectDiff(tf.tensor1d([0, 2, -2, 0, 2, 0]), 0.5);
    expect(await values(ties.indices)).toEqual([1, 2, 4]);
    expect(await values(ties.values)).toEqual([2, -2, 2]);
  });

  it('scatterDiff puts the values at their flat indices, and its gradient is dy at those indices', async () => {
    const idx = tf.tensor1d([1, 5, 6], 'int32');
    const v = tf.tensor1d([0.5, -1, 2]);
    expect(await values(scatterDiff(idx, v, [2, 4]))).toEqual([0, 0.5, 0, 0, 0, -1, 2, 0]);
    const w = tf.tensor2d([[1, 2, 3, 4], [5, 6, 7, 8]]);
    const g = await values(tf.grad((x: tf.Tensor) => tf.sum(tf.mul(scatterDiff(idx, x, [2, 4]), w)))(v));
    expect(g).toEqual([2, 6, 7]);
    // a corrupt index never writes outside the tensor
    const bad = tf.tensor1d([-5, 3, 1 << 30], 'int32');
    expect(await values(scatterDiff(bad, v, [2, 4]))).toEqual([0.5, 0, 0, -1, 0, 0, 0, 2]);
    tf.dispose([idx, v, w, bad]);
  });
});
