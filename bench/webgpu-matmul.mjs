// WGSL matmul (core's peftjs.MatMul and @peftjs/lora's LoraLinear fast paths) against tfjs-webgpu's matMul on the training
// shapes that matter, fp32.
//
//   npm run build && node bench/webgpu-matmul.mjs [--iters 20] [--only lm] [--tiles] [--no-gpu-time]
//
// Shapes: SmolLM-135M-shaped LLaMA at 8 × 256 = 2048 tokens (Linear forward x·Wᵀ for each projection and
// the tied LM head, the input gradient dY·W, LoRA r = 8's small products and its fused update), attention-
// like batched products [72, 256, 64]·[64, 256], and Qwen2-0.5B's projections at 1024 tokens.
// Each case: wall time per call over --iters calls ending with one awaited read (GPU work included), and
// GPU time per call from timestamps (tfjs-webgpu's timer queries, when the device has them). GFLOP/s is
// 2·M·N·K·batch over the time. --tiles also times every WGSL tile (and split-K choices) per shape and
// prints the best, to tune planMatmul; --only <substring> filters cases by name.
import * as tf from '@tensorflow/tfjs';
import * as core from '@peftjs/core';
import { loraLinearOp, setFusedLoraForward } from '@peftjs/lora';

const { initBackend, fusedMatMul, setFastPathsEnabled, wgslMatmul, planMatmul, MATMUL_TILES, toTensor, GpuProfiler, matmulTuning } = core;
const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const ITERS = Number(opt('iters', 20));
const ONLY = opt('only', '');
const TILES = argv.includes('--tiles');
const GPU_TIME = !argv.includes('--no-gpu-time');

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: argv.includes('--software') });
if (tf.getBackend() !== 'webgpu') {
  console.error(`webgpu unavailable: ${report.reason}`);
  process.exit(1);
}
// a hardware adapter: the shape-chosen tiles (compact mode is for software adapters)
if (!report.adapter?.isSoftware) matmulTuning.compact = false;
console.log(`# ${report.reason}`);
console.log(`# features: ${[...tf.backend().device.features].join(', ')}`);

/** Matmul cases: A [batch?, M, K] (or [K, M] transA), B [batch?, K, N] (or [N, K] transB). */
function mm(name, M, N, K, transA = false, transB = false, batch = 0) {
  return { name, M, N, K, transA, transB, batch, kind: 'mm' };
}
const T = 2048;
const cases = [
  // SmolLM-135M forward: x·Wᵀ
  mm('smol q/o fwd   x[2048,576]·W[576,576]ᵀ', T, 576, 576, false, true),
  mm('smol k/v fwd   x[2048,576]·W[192,576]ᵀ', T, 192, 576, false, true),
  mm('smol gate/up   x[2048,576]·W[1536,576]ᵀ', T, 1536, 576, false, true),
  mm('smol down fwd  x[2048,1536]·W[576,1536]ᵀ', T, 576, 1536, false, true),
  mm('smol lm head   x[2048,576]·W[49152,576]ᵀ', T, 49152, 576, false, true),
  // input gradients dX = dY·W (frozen weights)
  mm('smol q/o dX    dY[2048,576]·W[576,576]', T, 576, 576),
  mm('smol k/v dX    dY[2048,192]·W[192,576]', T, 576, 192),
  mm('smol gate dX   dY[2048,1536]·W[1536,576]', T, 576, 1536),
  mm('smol down dX   dY[2048,576]·W[576,1536]', T, 1536, 576),
  mm('smol lm dX     dY[2048,49152]·W[49152,576]', T, 576, 49152),
  // LoRA r = 8 pieces
  mm('lora xa        x[2048,576]·A[8,576]ᵀ', T, 8, 576, false, true),
  mm('lora dyB       dY[2048,576]·B[576,8]', T, 8, 576),
  mm('lora dA        (dyB)ᵀ[8,2048]·x[2048,576]', 8, 576, T, true, false),
  mm('lora dB        dYᵀ[576,2048]·xa[2048,8]', 576, 8, T, true, false),
  { name: 'lora fused    base + s·(x·Aᵀ)·Bᵀ (576→576, r 8)', kind: 'lora', M: T, N: 576, K: 576, r: 8 },
  { name: 'lora fwd+bwd  Linear + LoRA, grads x, A, B (r 8)', kind: 'lora-grad', M: T, N: 576, K: 576, r: 8 },
  // attention-like, 8 × 9 heads
  mm('attn q·kᵀ      [72,256,64]·[72,256,64]ᵀ', 256, 256, 64, false, true, 72),
  mm('attn p·v       [72,256,256]·[72,256,64]', 256, 64, 256, false, false, 72),
  // Qwen2-0.5B at 1024 tokens
  mm('qwen q/o fwd   x[1024,896]·W[896,896]ᵀ', 1024, 896, 896, false, true),
  mm('qwen k/v fwd   x[1024,896]·W[128,896]ᵀ', 1024, 128, 896, false, true),
  mm('qwen gate/up   x[1024,896]·W[4864,896]ᵀ', 1024, 4864, 896, false, true),
  mm('qwen down fwd  x[1024,4864]·W[896,4864]ᵀ', 1024, 896, 4864, false, true),
  mm('qwen lm head   x[1024,896]·W[151936,896]ᵀ', 1024, 151936, 896, false, true),
  mm('qwen gate dX   dY[1024,4864]·W[4864,896]', 1024, 896, 4864),
  mm('qwen down dX   dY[1024,896]·W[896,4864]', 1024, 4864, 896),
  mm('qwen lm dX     dY[1024,151936]·W[151936,896]', 1024, 896, 151936),
].filter((c) => c.name.includes(ONLY));

/** Wall ms per call over ITERS calls (one awaited read at the end), and GPU ms per call from timestamps. */
async function time(fn) {
  for (let i = 0; i < 2; i++) {
    const y = fn();
    await y.data();
    y.dispose();
  }
  const t0 = performance.now();
  let last;
  for (let i = 0; i < ITERS; i++) {
    if (last) last.dispose();
    last = fn();
  }
  await last.data();
  const wall = (performance.now() - t0) / ITERS;
  last.dispose();
  let gpu = NaN;
  if (GPU_TIME) {
    const p = new GpuProfiler();
    p.start();
    const n = Math.min(ITERS, 5);
    for (let i = 0; i < n; i++) fn().dispose();
    const prof = await p.stop();
    if (prof.timestamps) gpu = prof.gpuMs / n;
  }
  return { wall, gpu };
}

const gflops = (flop, ms) => (Number.isFinite(ms) && ms > 0 ? (flop / ms / 1e6).toFixed(0) : '—');
const fmt = (ms) => (Number.isFinite(ms) ? ms.toFixed(3) : '—');
const pad = (s, n) => String(s).padEnd(n);
console.log(`# iters ${ITERS}; times in ms per call; GFLOP/s from GPU time where there is one, else wall`);
console.log(`${pad('case', 48)} ${pad('tfjs wall', 10)} ${pad('tfjs gpu', 10)} ${pad('GF/s', 7)} ${pad('wgsl wall', 10)} ${pad('wgsl gpu', 10)} ${pad('GF/s', 7)} ${pad('speedup', 8)} plan`);

for (const c of cases) {
  const batch = c.batch || 1;
  const lowRank = 2 * c.M * c.N * c.r + 2 * c.M * c.K * c.r;
  // lora-grad: base forward + dX (2 big products), LoRA forward, and its backward (≈ 4 low-rank products)
  const flop = c.kind === 'lora-grad' ? 4 * c.M * c.N * c.K + 3 * lowRank : 2 * c.M * c.N * c.K * batch + (c.kind === 'lora' ? lowRank : 0);
  let tfjsT;
  let oursT;
  let plan = '';
  if (c.kind === 'lora-grad') {
    const x = tf.randomNormal([c.M, c.K]);
    const W = tf.randomNormal([c.N, c.K]);
    const A = tf.randomNormal([c.r, c.K]);
    const B = tf.randomNormal([c.N, c.r]);
    const { linearOp } = core;
    // one forward and backward; the sum of the gradients stands for the step's output (one tensor to await)
    const f = (xx, a, b) => tf.sum(loraLinearOp({ base: linearOp({ x: xx, weight: W }, {}), x: xx, loraA: a, loraB: b }, { scaling: 2 }));
    const call = () => tf.tidy(() => tf.addN(tf.grads(f)([x, A, B]).map((g) => tf.sum(g))));
    setFastPathsEnabled(false);
    tfjsT = await time(call);
    setFastPathsEnabled(true);
    oursT = await time(call);
    plan = 'fast paths vs tfjs references';
    tf.dispose([x, W, A, B]);
  } else if (c.kind === 'lora') {
    const base = tf.randomNormal([c.M, c.N]);
    const x = tf.randomNormal([c.M, c.K]);
    const A = tf.randomNormal([c.r, c.K]);
    const B = tf.randomNormal([c.N, c.r]);
    const call = () => loraLinearOp({ base, x, loraA: A, loraB: B }, { scaling: 2 });
    setFastPathsEnabled(false);
    tfjsT = await time(call);
    setFastPathsEnabled(true);
    oursT = await time(call);
    setFusedLoraForward(false);
    const two = await time(call);
    setFusedLoraForward(true);
    plan = `one dispatch | as two WGSL products: wall ${fmt(two.wall)} gpu ${fmt(two.gpu)}`;
    tf.dispose([base, x, A, B]);
  } else {
    const lead = c.batch ? [c.batch] : [];
    const a = tf.randomNormal([...lead, ...(c.transA ? [c.K, c.M] : [c.M, c.K])]);
    const b = tf.randomNormal([...lead, ...(c.transB ? [c.N, c.K] : [c.K, c.N])]);
    tfjsT = await time(() => tf.matMul(a, b, c.transA, c.transB));
    oursT = await time(() => fusedMatMul(a, b, { transA: c.transA, transB: c.transB }));
    const p = planMatmul(c.M, c.N, c.K, batch, tf.backend().device.limits);
    plan = `${p.tileName}${p.splits > 1 ? ` split ${p.splits}` : ''}`;
    if (TILES) {
      const results = [];
      for (const [tileName, tile] of Object.entries(MATMUL_TILES)) {
        const shared = tile.kt * (tile.wy * tile.rm + tile.wx * tile.rn) * 4;
        if (shared > tf.backend().device.limits.maxComputeWorkgroupStorageSize) continue;
        for (const splits of [1, 2, 4, 8, 16, 32]) {
          if (splits > 1 && c.K / splits < 128) continue;
          const t = await time(() => toTensor(wgslMatmul(undefined, { a, b, transA: c.transA, transB: c.transB, tile: tileName, splits, compact: false })));
          results.push({ tileName, splits, ms: Number.isFinite(t.gpu) ? t.gpu : t.wall });
        }
      }
      results.sort((x, y) => x.ms - y.ms);
      plan += ` | best: ${results.slice(0, 3).map((r) => `${r.tileName}/s${r.splits} ${r.ms.toFixed(3)}ms ${gflops(flop, r.ms)}GF/s`).join(', ')}`;
    }
    tf.dispose([a, b]);
  }
  const tRef = Number.isFinite(tfjsT.gpu) ? tfjsT.gpu : tfjsT.wall;
  const tOurs = Number.isFinite(oursT.gpu) ? oursT.gpu : oursT.wall;
  console.log(
    `${pad(c.name, 48)} ${pad(fmt(tfjsT.wall), 10)} ${pad(fmt(tfjsT.gpu), 10)} ${pad(gflops(flop, tRef), 7)} ${pad(fmt(oursT.wall), 10)} ${pad(fmt(oursT.gpu), 10)} ${pad(gflops(flop, tOurs), 7)} ${pad(`${(tRef / tOurs).toFixed(2)}×`, 8)} ${plan}`,
  );
}
process.exit(0);
