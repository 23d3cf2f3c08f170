// The fused AdamW step on webgpu (lavapipe in CI; skipped without an adapter) against AdamW's tfjs
// composition on the same backend: 20-step trajectories, gated steps, in-place safety, no leaks.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend, webgpuBackend } from '@peftjs/core';
import { AdamW, type NamedParams } from './optimizer';
import { canFuseAdamW, setFusedAdamW } from './adamw_webgpu';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';

// odd sizes (not multiples of 4 or of the 256-thread workgroup), a scalar-sized one, a LoRA-sized one;
// 6 parameters → two dispatches of 4 + 2 (ungated) or 3 + 3 (gated)
const SHAPES = [[5, 7], [33], [3, 130], [1], [16, 576], [2, 2]];

function makeParams(tag: string): NamedParams {
  return SHAPES.map((s, i) => [`${tag}.${i}`, tf.variable(tf.randomNormal(s, 0, 1, 'float32', 100 + i))]);
}

function grads(params: NamedParams, step: number): Record<string, tf.Tensor> {
  return Object.fromEntries(params.map(([n, p], i) => [n, tf.randomNormal(p.shape, 0, 0.1 + step * 0.01, 'float32', 1000 * step + i)]));
}

/** max |a − b| / max |b| over every parameter and moment. */
async function relDiff(a: AdamW, b: AdamW, pa: NamedParams, pb: NamedParams): Promise<number> {
  const ta = [...pa.map(([, p]) => p), ...Object.values(a.stateTensors())];
  const tb = [...pb.map(([, p]) => p), ...Object.values(b.stateTensors())];
  let worst = 0;
  for (let i = 0; i < ta.length; i++) {
    const [x, y] = [await ta[i].data(), await tb[i].data()];
    let d = 0;
    let s = 1e-30;
    for (let j = 0; j < x.length; j++) {
      d = Math.max(d, Math.abs(x[j] - y[j]));
      s = Math.max(s, Math.abs(y[j]));
    }
    worst = Math.max(worst, d / s);
  }
  return worst;
}

/** Runs `steps` on a fused and a reference AdamW with the same grads; `apply(step)` gates a step. */
async function trajectories(steps: number, opts: { weightDecay?: number; apply?: (t: number) => boolean | undefined }) {
  const pf = makeParams('f');
  const pr = makeParams('r');
  const fused = new AdamW(pf, { weightDecay: opts.weightDecay });
  const ref = new AdamW(pr, { weightDecay: opts.weightDecay });
  let worst = 0;
  for (let t = 1; t <= steps; t++) {
    const lr = 1e-2 * (1 - t / (2 * steps));
    const a = opts.apply?.(t);
    const gate = a === undefined ? undefined : tf.scalar(a ? 1 : 0);
    const gf = grads(pf, t);
    const gr = Object.fromEntries(Object.entries(gf).map(([n, g]) => [n.replace(/^f/, 'r'), g]));
    fused.step(gf, lr, gate ? { apply: gate } : {});
    setFusedAdamW(false);
    try {
      ref.step(gr, lr, gate ? { apply: gate } : {});
    } finally {
      setFusedAdamW(true);
    }
    tf.dispose([...Object.values(gf), gate ?? []].flat());
    worst = Math.max(worst, await relDiff(fused, ref, pf, pr));
  }
  return { pf, pr, fused, ref, worst };
}

describe.skipIf(!onGpu)('fused AdamW on webgpu', () => {
  it('is the path AdamW takes on webgpu for float32 parameters', () => {
    const p = tf.variable(tf.ones([3]));
    const g = tf.ones([3]);
    expect(canFuseAdamW([{ p, g, m: p, v: p }])).toBe(true);
    setFusedAdamW(false);
    expect(canFuseAdamW([{ p, g, m: p, v: p }])).toBe(false);
    setFusedAdamW(true);
    tf.dispose([p, g]);
  });

  for (const weightDecay of [0.01, 0]) {
    it(`follows the tfjs composition within 1e-6 relative over 20 steps (weight decay ${weightDecay})`, async () => {
      const { pf, pr, fused, ref, worst } = await trajectories(20, { weightDecay });
      console.log(`fused AdamW, wd ${weightDecay}: worst relative difference over 20 steps ${worst.toExponential(2)}`);
      expect(worst).toBeLessThanOrEqual(1e-6);
      // and it moved: the parameters are not where they started
      const start = tf.randomNormal(SHAPES[4], 0, 1, 'float32', 104);
      expect((await tf.max(tf.abs(tf.sub(pf[4][1], start))).data())[0]).toBeGreaterThan(1e-2);
      fused.dispose();
      ref.dispose();
      tf.dispose([...pf.map(([, p]) => p), ...pr.map(([, p]) => p), start]);
    });
  }

  it('gated steps: a 0 gate changes nothing, a 1 gate is a normal step, as the composition', async () => {
    const pattern = [true, false, true, true, false, false, true, true];
    const { pf, pr, fused, ref, worst } = await trajectories(pattern.length, { apply: (t) => pattern[t - 1] });
    expect(worst).toBeLessThanOrEqual(1e-6);
    await fused.sync();
    await ref.sync();
    expect(fused.stepCount).toBe(pattern.filter(Boolean).length);
    fused.dispose();
    ref.dispose();
    tf.dispose([...pf.map(([, p]) => p), ...pr.map(([, p]) => p)]);
  });

  it('a first step gated off leaves parameters and moments exactly as they were', async () => {
    const params = makeParams('z');
    const before = await Promise.all(params.map(([, p]) => p.data()));
    const opt = new AdamW(params);
    const g = grads(params, 1);
    opt.step(g, 0.1, { apply: tf.scalar(false, 'bool') });
    for (let i = 0; i < params.length; i++) expect(Array.from(await params[i][1].data())).toEqual(Array.from(before[i]));
    for (const t of Object.values(opt.stateTensors())) expect(Array.from(await t.data()).every((x) => x === 0)).toBe(true);
    tf.dispose(Object.values(g));
    opt.dispose();
    tf.dispose(params.map(([, p]) => p));
  });

  it('writes in place safely: a tensor sharing a parameter keeps its values; a read before a step is not served stale', async () => {
    const x = tf.randomNormal([37], 0, 1, 'float32', 5);
    const p = tf.variable(x); // shares x's data
    const xs = Array.from(await x.data());
    await p.data(); // caches the values on the CPU
    const opt = new AdamW([['p', p]]);
    const g = tf.onesLike(p);
    opt.step({ p: g }, 0.1);
    expect(Array.from(await x.data())).toEqual(xs);
    const after = await p.data();
    // the first AdamW step moves every element by ≈ lr (m̂ / √v̂ = 1), plus the decay
    for (let j = 0; j < xs.length; j++) expect(after[j]).toBeCloseTo(xs[j] * (1 - 0.1 * 0.01) - 0.1, 5);
    opt.step({ p: g }, 0.1);
    const again = await p.data();
    expect(again[0]).not.toBe(after[0]);
    tf.dispose([x, p, g]);
    opt.dispose();
  });

  it('one dispatch per 4 parameters once the moments own their buffers', async () => {
    const params = makeParams('d');
    const opt = new AdamW(params);
    const g = grads(params, 1);
    opt.step(g, 0.01);
    await params[0][1].data();
    const device = webgpuBackend().device as unknown as { createBindGroup: (d: unknown) => unknown };
    const orig = device.createBindGroup;
    let n = 0;
    device.createBindGroup = (d: unknown) => {
      n++;
      return orig.call(device, d);
    };
    try {
      opt.step(g, 0.01);
      await params[0][1].data();
    } finally {
      device.createBindGroup = orig;
    }
    expect(n).toBe(Math.ceil(SHAPES.length / 4));
    tf.dispose(Object.values(g));
    opt.dispose();
    tf.dispose(params.map(([, p]) => p));
  });

  it('leaks no tensors across steps (gated or not)', async () => {
    const params = makeParams('m');
    const opt = new AdamW(params);
    const g0 = grads(params, 1);
    opt.step(g0, 0.01); // warm-up: own buffers for the moments
    const on = tf.scalar(true, 'bool');
    opt.step(g0, 0.01, { apply: on }); // and the optimizer's device step counter
    on.dispose();
    const before = tf.memory().numTensors;
    for (let t = 2; t < 6; t++) {
      const g = grads(params, t);
      const gate = t % 2 ? tf.scalar(true, 'bool') : undefined;
      opt.step(g, 0.01, gate ? { apply: gate } : {});
      tf.dispose([...Object.values(g), gate ?? []].flat());
    }
    await opt.sync();
    opt.step(g0, 0.01);
    await params[0][1].data();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose(Object.values(g0));
    opt.dispose();
    tf.dispose(params.map(([, p]) => p));
  });
});
