import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../../errors';
import { backendReport } from '../../backend';
import { dispatch1d, runWgsl, webgpuBackend, type WgslKernel } from './runner';

/**
 * A tiled, register-blocked fp32 matmul for tfjs's webgpu backend, in WGSL:
 *
 *     out[b] = alpha · op(A[b]) · op(B[b])  (+ bias)  (+ beta · C[b])
 *
 * with op(X) = X or Xᵀ (all four combinations: no transpose copies in gradients), A [batchA, M, K]
 * (or [batchA, K, M] when transA), B [batchB, K, N] (or [batchB, N, K] when transB), a batch of 1
 * broadcasting against the other operand's batch, `bias` [N] added to every row, and `C` shaped like the
 * output (or a batch of 1) — the epilogue that fuses LoRA's update into its base output.
 *
 * Kernel structure: one workgroup computes a TM×TN output tile (TM = wy·rm, TN = wx·rn), each thread an
 * rm×rn block of vec4 accumulators; A and B are staged through workgroup memory KT columns of K at a
 * time (stored K-major so the inner loop reads vec4s of M and N). Global loads are vec4 wherever the
 * operand's contiguous dimension is a multiple of 4, else scalar; edges (M, N, K not multiples of the
 * tile, one row, K = 1) are guarded loads of zeros. Few output tiles and a long K (dX = dY·W of an LM
 * head: M·N small, K = vocab) split K over workgroups: raw partial products to a scratch tensor, then one
 * reduce kernel applies the epilogue.
 *
 * Reuse from other kernels:
 *  - `runMatmul(backend, args)` — inside a tfjs kernelFunc (TensorInfos in, TensorInfo out);
 *  - `matmulOp` (in ./matmul_op) — the differentiable tensor op `peftjs.MatMul` built on it;
 *  - `matmulKernel(variant)` — just the WGSL module (a `WgslKernel` for `runWgsl`), with bindings
 *    out, A, B, [bias], [C], uniforms `MatmulUniforms` (see `matmulUniforms`).
 */

/** A thread-block shape: workgroup wx × wy threads, each rm × rn outputs (multiples of 4), K-step kt. */
export interface MatmulTile {
  wx: number;
  wy: number;
  rm: number;
  rn: number;
  kt: number;
}

/** Everything that changes the WGSL of one matmul kernel. */
export interface MatmulVariant {
  transA: boolean;
  transB: boolean;
  /** vec4 global loads of A (its contiguous dimension, K or M when transA, is a multiple of 4). */
  vecA: boolean;
  /** vec4 global loads of B (N, or K when transB, a multiple of 4). */
  vecB: boolean;
  /** vec4 output/bias/C access (N a multiple of 4). */
  vecOut: boolean;
  bias: boolean;
  /** Reads C and adds beta·C. */
  addC: boolean;
  /** Split-K partial: writes raw sums to out[split][batch][M][N], no epilogue. */
  partial: boolean;
  tile: MatmulTile;
}

/** Named tiles (`runMatmul`'s `tile` option forces one; otherwise chosen by shape). */
export const MATMUL_TILES = {
  /** 128×128, 8×8 per thread, 256 threads. */
  t128x128: { wx: 16, wy: 16, rm: 8, rn: 8, kt: 16 },
  /** 128×64, 8×4 per thread, 256 threads. */
  t128x64: { wx: 16, wy: 16, rm: 8, rn: 4, kt: 16 },
  /** 64×128, 4×8 per thread. */
  t64x128: { wx: 16, wy: 16, rm: 4, rn: 8, kt: 16 },
  /** 64×64, 4×4 per thread, 256 threads. */
  t64x64: { wx: 16, wy: 16, rm: 4, rn: 4, kt: 16 },
  /** 32×32, 4×4 per thread, 64 threads. */
  t32x32: { wx: 8, wy: 8, rm: 4, rn: 4, kt: 16 },
  /** skinny N (LoRA's x·Aᵀ, r ≤ 8): 128×8, 64 threads. */
  t128x8: { wx: 2, wy: 32, rm: 4, rn: 4, kt: 16 },
  /** skinny N ≤ 16: 128×16, 128 threads. */
  t128x16: { wx: 4, wy: 32, rm: 4, rn: 4, kt: 16 },
  /** skinny M (LoRA's dA = (dy·B)ᵀ·x, r ≤ 8): 8×128. */
  t8x128: { wx: 32, wy: 2, rm: 4, rn: 4, kt: 16 },
  /** skinny M ≤ 16: 16×128. */
  t16x128: { wx: 32, wy: 4, rm: 4, rn: 4, kt: 16 },
} as const satisfies Record<string, MatmulTile>;
export type MatmulTileName = keyof typeof MATMUL_TILES;

const tileDims = (t: MatmulTile) => ({ TM: t.wy * t.rm, TN: t.wx * t.rn, NT: t.wx * t.wy });

export function variantKey(v: MatmulVariant): string {
  const t = v.tile;
  return `peftjsMatMul:${v.transA ? 'T' : 'N'}${v.transB ? 'T' : 'N'}:${+v.vecA}${+v.vecB}${+v.vecOut}:${+v.bias}${+v.addC}${+v.partial}:${t.wx}x${t.wy}x${t.rm}x${t.rn}x${t.kt}`;
}

/**
 * Emits the staging of one operand's KT×T tile into workgroup memory `sh` (K-major, vec4 along the
 * tile's M or N), in two halves so that the global loads of the next K-step are in flight while the
 * current one is computed: `load(k)` reads the tile at K offset `k` into registers, `store` writes those
 * registers to workgroup memory. `kContig`: the operand's K dimension is contiguous in memory (A not
 * transposed, B transposed); `dim`: the uniform holding its M or N size; `t0`: the tile's first
 * row/column.
 */
function stageOperand(src: string, sh: string, kContig: boolean, vec: boolean, T: number, KT: number, NT: number, dim: string, t0: string, off: string) {
  const T4 = T / 4;
  const count = kContig ? (vec ? T * (KT / 4) : T * KT) : vec ? KT * T4 : KT * T;
  const iters = Math.ceil(count / NT);
  const ragged = iters * NT > count;
  const ty = vec ? 'vec4<f32>' : 'f32';
  const zero = vec ? 'vec4<f32>(0.0)' : '0.0';
  // per element i of the tile: its row/column `r` (or vec4 column `q`) and K index `kk` / vec4 `kq`
  let coords: string;
  let addr: (k: string) => string;
  let write: (p: string) => string;
  if (kContig && vec) {
    const K4 = KT / 4;
    coords = `let r = i / ${K4}u; let kq = i % ${K4}u;`;
    addr = (k) => `let g = ${t0} + r; let gk = ${k} + kq * 4u; if (g < u.${dim} && gk < kEnd) { P = ${src}[(${off} + g * u.K + gk) / 4u]; }`;
    write = (p) => `let base = kq * ${4 * T4}u + r / 4u; let c = r % 4u; ${sh}[base][c] = ${p}.x; ${sh}[base + ${T4}u][c] = ${p}.y; ${sh}[base + ${2 * T4}u][c] = ${p}.z; ${sh}[base + ${3 * T4}u][c] = ${p}.w;`;
  } else if (kContig) {
    coords = `let r = i / ${KT}u; let kk = i % ${KT}u;`;
    addr = (k) => `let g = ${t0} + r; let gk = ${k} + kk; if (g < u.${dim} && gk < kEnd) { P = ${src}[${off} + g * u.K + gk]; }`;
    write = (p) => `${sh}[kk * ${T4}u + r / 4u][r % 4u] = ${p};`;
  } else if (vec) {
    coords = `let kk = i / ${T4}u; let q = i % ${T4}u;`;
    addr = (k) => `let g = ${t0} + q * 4u; let gk = ${k} + kk; if (g < u.${dim} && gk < kEnd) { P = ${src}[(${off} + gk * u.${dim} + g) / 4u]; }`;
    write = (p) => `${sh}[kk * ${T4}u + q] = ${p};`;
  } else {
    coords = `let kk = i / ${T}u; let r = i % ${T}u;`;
    addr = (k) => `let g = ${t0} + r; let gk = ${k} + kk; if (g < u.${dim} && gk < kEnd) { P = ${src}[${off} + gk * u.${dim} + g]; }`;
    write = (p) => `${sh}[kk * ${T4}u + r / 4u][r % 4u] = ${p};`;
  }
  const decl: string[] = [];
  const loads: ((k: string) => string)[] = [];
  const stores: string[] = [];
  for (let it = 0; it < iters; it++) {
    const p = `p${src}${it}`;
    const last = it === iters - 1 && ragged;
    decl.push(`var ${p}: ${ty} = ${zero};`);
    loads.push((k: string) => `{ let i = lid + ${it * NT}u; ${coords} ${p} = ${zero}; ${last ? `if (i < ${count}u) ` : ''}{ ${addr(k).replace(/\bP\b/g, p)} } }`);
    stores.push(`{ let i = lid + ${it * NT}u; ${coords} ${last ? `if (i < ${count}u) ` : ''}{ ${write(p)} } }`);
  }
  return {
    decl: decl.join('\n  '),
    load: (k: string) => loads.map((f) => f(k)).join('\n    '),
    store: stores.join('\n    '),
  };
}

/** The uniform block every matmul kernel reads (`matmulUniforms` fills it). */
const UNIFORMS = `struct U { M: u32, N: u32, K: u32, batch: u32, strideA: u32, strideB: u32, strideC: u32, kChunk: u32, alpha: f32, beta: f32 }`;

/** The WGSL module of one matmul variant (entry point `main`; see the file comment for bindings). */
export function matmulKernel(v: MatmulVariant): WgslKernel {
  return { key: variantKey(v), code: () => matmulSource(v) };
}

function matmulSource(v: MatmulVariant): string {
  const t = v.tile;
  const { TM, TN, NT } = tileDims(t);
  if (t.rm % 4 || t.rn % 4) throw new PeftError('INVALID_ARGUMENT', `matmul tile rm=${t.rm} rn=${t.rn}: both must be multiples of 4`);
  const TM4 = TM / 4;
  const TN4 = TN / 4;
  const RM4 = t.rm / 4;
  const RN4 = t.rn / 4;
  const KT = t.kt;
  const OT = v.vecOut ? 'vec4<f32>' : 'f32';
  let binding = 0;
  const decl: string[] = [];
  decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> out: array<${OT}>;`);
  decl.push(`@group(0) @binding(${binding++}) var<storage, read> A: array<${v.vecA ? 'vec4<f32>' : 'f32'}>;`);
  decl.push(`@group(0) @binding(${binding++}) var<storage, read> B: array<${v.vecB ? 'vec4<f32>' : 'f32'}>;`);
  if (v.bias && !v.partial) decl.push(`@group(0) @binding(${binding++}) var<storage, read> bias: array<${OT}>;`);
  if (v.addC && !v.partial) decl.push(`@group(0) @binding(${binding++}) var<storage, read> C: array<${OT}>;`);
  decl.push(`@group(0) @binding(${binding++}) var<uniform> u: U;`);

  const acc: string[] = [];
  const fmas: string[] = [];
  const aLoads: string[] = [];
  const bLoads: string[] = [];
  for (let q = 0; q < RM4; q++) aLoads.push(`let a${q} = As[kk * ${TM4}u + ${q * t.wy}u + ty];`);
  for (let j = 0; j < RN4; j++) bLoads.push(`let b${j} = Bs[kk * ${TN4}u + ${j * t.wx}u + tx];`);
  for (let i = 0; i < t.rm; i++) {
    for (let j = 0; j < RN4; j++) {
      acc.push(`var c${i}_${j} = vec4<f32>(0.0);`);
      fmas.push(`c${i}_${j} = fma(vec4<f32>(a${i >> 2}[${i & 3}]), b${j}, c${i}_${j});`);
    }
  }

  // epilogue: thread rows m = m0 + (q·wy + ty)·4 + r, columns n = n0 + (j·wx + tx)·4 + c
  const epi: string[] = [];
  const outOff = v.partial ? '(split * u.batch + bi) * u.M * u.N' : 'bi * u.M * u.N';
  for (let i = 0; i < t.rm; i++) {
    const q = i >> 2;
    const r = i & 3;
    epi.push(`  { let m = m0 + ${q * t.wy * 4 + r}u + ty * 4u; if (m < u.M) {`);
    for (let j = 0; j < RN4; j++) {
      const n = `n0 + ${j * t.wx * 4}u + tx * 4u`;
      const val = `c${i}_${j}`;
      if (v.vecOut) {
        const terms = [v.partial ? val : `u.alpha * ${val}`];
        if (!v.partial && v.bias) terms.push('bias[n / 4u]');
        if (!v.partial && v.addC) terms.push('u.beta * C[(bi * u.strideC + m * u.N + n) / 4u]');
        epi.push(`    { let n = ${n}; if (n < u.N) { out[(${outOff} + m * u.N + n) / 4u] = ${terms.join(' + ')}; } }`);
      } else {
        for (let c = 0; c < 4; c++) {
          const comp = `${val}[${c}]`;
          const terms = [v.partial ? comp : `u.alpha * ${comp}`];
          if (!v.partial && v.bias) terms.push('bias[n]');
          if (!v.partial && v.addC) terms.push('u.beta * C[bi * u.strideC + m * u.N + n]');
          epi.push(`    { let n = ${n} + ${c}u; if (n < u.N) { out[${outOff} + m * u.N + n] = ${terms.join(' + ')}; } }`);
        }
      }
    }
    epi.push('  } }');
  }

  const sa = stageOperand('A', 'As', !v.transA, v.vecA, TM, KT, NT, 'M', 'm0', 'offA');
  const sb = stageOperand('B', 'Bs', v.transB, v.vecB, TN, KT, NT, 'N', 'n0', 'offB');
  return /* wgsl */ `
${UNIFORMS}
${decl.join('\n')}
var<workgroup> As: array<vec4<f32>, ${KT * TM4}>;
var<workgroup> Bs: array<vec4<f32>, ${KT * TN4}>;

@compute @workgroup_size(${t.wx}, ${t.wy}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid3.x;
  let ty = lid3.y;
  let bi = wid.z % u.batch;
  let split = wid.z / u.batch;
  let m0 = wid.y * ${TM}u;
  let n0 = wid.x * ${TN}u;
  let offA = bi * u.strideA;
  let offB = bi * u.strideB;
  let kBegin = split * u.kChunk;
  let kEnd = min(u.K, kBegin + u.kChunk);
  ${acc.join('\n  ')}
  ${sa.decl}
  ${sb.decl}
  ${sa.load('kBegin')}
  ${sb.load('kBegin')}
  for (var k0 = kBegin; k0 < kEnd; k0 = k0 + ${KT}u) {
    ${sa.store}
    ${sb.store}
    workgroupBarrier();
    let kn = k0 + ${KT}u;
    if (kn < kEnd) {
      // the next K-step's global loads, in flight during this step's products
      ${sa.load('kn')}
      ${sb.load('kn')}
    }
    for (var kk = 0u; kk < ${KT}u; kk = kk + 1u) {
      ${aLoads.join('\n      ')}
      ${bLoads.join('\n      ')}
      ${fmas.join('\n      ')}
    }
    workgroupBarrier();
  }
${epi.join('\n')}
}`;
}

/** The split-K reduction: out = alpha·Σ partial + bias + beta·C, vec4 when N % 4 == 0. */
function reduceKernel(vec: boolean, bias: boolean, addC: boolean): WgslKernel {
  const T = vec ? 'vec4<f32>' : 'f32';
  return {
    key: `peftjsMatMulReduce:${+vec}${+bias}${+addC}`,
    code: () => {
      let binding = 0;
      const decl = [
        `@group(0) @binding(${binding++}) var<storage, read_write> out: array<${T}>;`,
        `@group(0) @binding(${binding++}) var<storage, read> P: array<${T}>;`,
      ];
      if (bias) decl.push(`@group(0) @binding(${binding++}) var<storage, read> bias: array<${T}>;`);
      if (addC) decl.push(`@group(0) @binding(${binding++}) var<storage, read> C: array<${T}>;`);
      decl.push(`@group(0) @binding(${binding++}) var<uniform> u: R;`);
      const terms = ['u.alpha * s'];
      // indices in units of T: MN and N are divisible by 4 when vec
      if (bias) terms.push(`bias[(e % u.MN) % u.N]`);
      if (addC) terms.push(`u.beta * C[(e / u.MN) * u.strideC + e % u.MN]`);
      return /* wgsl */ `
struct R { total: u32, MN: u32, N: u32, splits: u32, strideC: u32, alpha: f32, beta: f32 }
${decl.join('\n')}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (e >= u.total) { return; }
  var s = P[e];
  for (var k = 1u; k < u.splits; k = k + 1u) { s = s + P[k * u.total + e]; }
  out[e] = ${terms.join(' + ')};
}`;
    },
  };
}

export interface MatmulArgs {
  a: tf.TensorInfo;
  b: tf.TensorInfo;
  transA?: boolean;
  transB?: boolean;
  /** [N], added to every row. */
  bias?: tf.TensorInfo;
  /** Shaped like the output (or with a batch of 1): out += beta·C. */
  c?: tf.TensorInfo;
  alpha?: number;
  beta?: number;
  /** The output's shape (same size as [...batch, M, N]); default the broadcast batch dims then [M, N]. */
  outShape?: number[];
  /** Force a tile (benchmarks, tests); default chosen by shape. */
  tile?: MatmulTileName | MatmulTile;
  /** Force the split-K factor (1 = none); default chosen by shape. */
  splits?: number;
  /** Override `matmulTuning.compact` for this call (tests of the vec4 paths on lavapipe). */
  compact?: boolean;
}

export interface MatmulPlan {
  tile: MatmulTile;
  tileName: string;
  splits: number;
}

/** Tuning of the tile choice (a device model; the defaults suit a large discrete GPU). */
export const matmulTuning = {
  /** Workgroups the device runs at once (≈ 2 per SM of a 132-SM H200). */
  concurrency: 264,
  /** Relative throughput per tile (register blocking): larger tiles re-use each load more. */
  efficiency: { t128x128: 1, t128x64: 0.85, t64x128: 0.85, t64x64: 0.6, t32x32: 0.3, t128x8: 0.3, t128x16: 0.3, t8x128: 0.3, t16x128: 0.3 } as Record<string, number>,
  /**
   * What one more dispatch costs, in the cost model's tile-work units (≈ 47k units a microsecond of H200
   * GPU time at 128×128 tiles): a split-K product is two dispatches, and the second one's CPU time (≈ 50–90
   * µs in tfjs's command stream) is pure loss while a training step is bound by dispatching, as it is at
   * the SmolLM shape. So a split must save more GPU time than that — the LM head's input gradient (K =
   * vocab) does, a 576-wide projection does not.
   */
  dispatchPenalty: 6_000_000,
  /** Below this K a split is never worth its scratch buffer. */
  minKPerSplit: 256,
  maxSplits: 32,
  /** Largest split-K scratch tensor (splits × batch × M × N floats) the planner may ask for. */
  maxScratchBytes: 64 * 1024 * 1024,
  /**
   * Compact mode: one small tile, scalar loads, no split K — the fewest distinct shaders. For software
   * adapters (lavapipe compiles each WGSL variant for seconds); 'auto' turns it on for those.
   */
  compact: 'auto' as boolean | 'auto',
};

function compactMode(): boolean {
  if (matmulTuning.compact !== 'auto') return matmulTuning.compact;
  return backendReport()?.adapter?.isSoftware === true;
}

function sharedBytes(t: MatmulTile): number {
  const { TM, TN } = tileDims(t);
  return t.kt * (TM + TN) * 4;
}

/** Picks tile and split-K factor for an M×N×K product over `batch` entries (a crude cost model). */
export function planMatmul(M: number, N: number, K: number, batch: number, limits?: { maxComputeWorkgroupStorageSize: number; maxComputeInvocationsPerWorkgroup: number }): MatmulPlan {
  const maxShared = limits?.maxComputeWorkgroupStorageSize ?? 16384;
  const maxThreads = limits?.maxComputeInvocationsPerWorkgroup ?? 256;
  let names: MatmulTileName[];
  if (N <= 8) names = ['t128x8', 't32x32'];
  else if (N <= 16) names = ['t128x16', 't32x32'];
  else if (M <= 8) names = ['t8x128', 't32x32'];
  else if (M <= 16) names = ['t16x128', 't32x32'];
  else names = ['t128x128', 't128x64', 't64x128', 't64x64', 't32x32'];
  let best: (MatmulPlan & { cost: number }) | undefined;
  const conc = matmulTuning.concurrency;
  for (const name of names) {
    const tile = MATMUL_TILES[name];
    if (sharedBytes(tile) > maxShared || tile.wx * tile.wy > maxThreads) continue;
    const { TM, TN } = tileDims(tile);
    const tiles = Math.ceil(M / TM) * Math.ceil(N / TN) * batch;
    const byScratch = Math.floor(matmulTuning.maxScratchBytes / Math.max(1, batch * M * N * 4));
    const maxSplit = Math.max(1, Math.min(matmulTuning.maxSplits, Math.floor(K / matmulTuning.minKPerSplit), byScratch));
    for (let s = 1; s <= maxSplit; s = s < 4 ? s + 1 : s * 2) {
      const kChunk = Math.ceil(Math.ceil(K / s) / tile.kt) * tile.kt;
      const splits = Math.ceil(K / kChunk);
      const wgs = tiles * splits;
      const waves = Math.ceil(wgs / conc);
      // time ∝ waves × work of one tile / efficiency, plus the reduction's traffic (in tile-work units)
      const eff = matmulTuning.efficiency[name] ?? 0.3;
      const tileWork = (TM * TN * Math.max(kChunk, 16)) / eff;
      const reduce = splits > 1 ? (batch * M * N * (splits + 1) * 8) / conc : 0;
      const cost = waves * tileWork + reduce + (splits > 1 ? matmulTuning.dispatchPenalty : 0);
      if (!best || cost < best.cost) best = { tile, tileName: name, splits, cost };
    }
  }
  if (!best) {
    const tile = MATMUL_TILES.t32x32;
    return { tile, tileName: 't32x32', splits: 1 };
  }
  return { tile: best.tile, tileName: best.tileName, splits: best.splits };
}

interface Dims {
  M: number;
  N: number;
  K: number;
  batchA: number;
  batchB: number;
  batch: number;
  lead: number[];
}

function dimsOf(a: tf.TensorInfo, b: tf.TensorInfo, transA: boolean, transB: boolean): Dims {
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) throw new PeftError('SHAPE_MISMATCH', `matmul: operands of shapes [${a.shape}] and [${b.shape}]; both need rank ≥ 2`);
  const M = transA ? a.shape[ra - 1] : a.shape[ra - 2];
  const Ka = transA ? a.shape[ra - 2] : a.shape[ra - 1];
  const Kb = transB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (Ka !== Kb) throw new PeftError('SHAPE_MISMATCH', `matmul: inner sizes ${Ka} and ${Kb} differ ([${a.shape}]${transA ? 'ᵀ' : ''}·[${b.shape}]${transB ? 'ᵀ' : ''})`);
  const la = a.shape.slice(0, -2);
  const lb = b.shape.slice(0, -2);
  const batchA = tf.util.sizeFromShape(la);
  const batchB = tf.util.sizeFromShape(lb);
  let lead: number[];
  try {
    lead = tf.broadcast_util.assertAndGetBroadcastShape(la, lb);
  } catch {
    throw new PeftError('SHAPE_MISMATCH', `matmul: batch dims [${la}] and [${lb}] do not broadcast`);
  }
  const batch = Math.max(batchA, batchB);
  if (tf.util.sizeFromShape(lead) !== batch || (batchA !== batch && batchA !== 1) || (batchB !== batch && batchB !== 1)) {
    throw new PeftError('SHAPE_MISMATCH', `matmul: batch dims [${la}] and [${lb}]: only equal batches or a batch of 1 broadcast`);
  }
  return { M, N, K: Ka, batchA, batchB, batch: Math.max(batchA, batchB), lead };
}

/** Whether `runMatmul` handles these operands (dtype float32, batches equal or one of them 1). */
export function matmulSupports(a: tf.TensorInfo, b: tf.TensorInfo, transA = false, transB = false): boolean {
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return false;
  try {
    dimsOf(a, b, transA, transB);
    return true;
  } catch {
    return false;
  }
}

type Backend = { disposeData(dataId: unknown): void; device: GPUDevice };

/** tfjs's own webgpu kernels, saved when ./tfjs_matmul.ts replaces them (so fallbacks never recurse). */
export const originalKernels = new Map<string, tf.KernelConfig>();

/**
 * alpha·op(a)·op(b) (+ bias) (+ beta·c) on the webgpu backend: one dispatch, or two with split K.
 * Returns a new TensorInfo owned by the caller (a kernelFunc's result).
 */
export function runMatmul(backend: unknown, args: MatmulArgs): tf.TensorInfo {
  const b = webgpuBackend(backend) as unknown as Backend;
  const transA = !!args.transA;
  const transB = !!args.transB;
  const d = dimsOf(args.a, args.b, transA, transB);
  const { M, N, K, batch } = d;
  const outShape = args.outShape ?? [...d.lead, M, N];
  if (tf.util.sizeFromShape(outShape) !== batch * M * N) throw new PeftError('SHAPE_MISMATCH', `matmul: outShape [${outShape}] does not hold [${batch}, ${M}, ${N}]`);
  for (const [name, t] of [['a', args.a], ['b', args.b], ['bias', args.bias], ['c', args.c]] as const) {
    if (t && t.dtype !== 'float32') throw new PeftError('UNSUPPORTED', `matmul: ${name} is ${t.dtype}; the WGSL matmul is float32 only`);
  }
  if (args.bias && tf.util.sizeFromShape(args.bias.shape) !== N) throw new PeftError('SHAPE_MISMATCH', `matmul: bias [${args.bias.shape}] is not of size N = ${N}`);
  let strideC = 0;
  if (args.c) {
    const size = tf.util.sizeFromShape(args.c.shape);
    if (size === batch * M * N) strideC = M * N;
    else if (size !== M * N) throw new PeftError('SHAPE_MISMATCH', `matmul: c [${args.c.shape}] is neither the output's size [${outShape}] nor one batch entry [${M}, ${N}]`);
  }
  const alpha = args.alpha ?? 1;
  const beta = args.beta ?? 1;
  const limits = b.device.limits;
  const forced = typeof args.tile === 'string' ? MATMUL_TILES[args.tile] : args.tile;
  const compact = args.compact ?? compactMode();
  const plan = forced ? { tile: forced, splits: args.splits ?? 1 } : compact ? { tile: MATMUL_TILES.t32x32, splits: 1 } : planMatmul(M, N, K, batch, limits);
  const tile = plan.tile;
  let splits = K === 0 ? 1 : Math.max(1, Math.floor(args.splits ?? plan.splits));
  // K = 0: the loop over K runs no step and the epilogue alone (bias, beta·C) is written
  const kChunk = K === 0 ? 0 : Math.ceil(Math.ceil(K / splits) / tile.kt) * tile.kt;
  if (K > 0) splits = Math.ceil(K / kChunk);
  const { TM, TN } = tileDims(tile);
  const vecA = !compact && (transA ? M : K) % 4 === 0;
  const vecB = !compact && (transB ? K : N) % 4 === 0;
  const vecOut = !compact && N % 4 === 0;
  const partial = splits > 1;
  const variant: MatmulVariant = { transA, transB, vecA, vecB, vecOut, bias: !!args.bias, addC: !!args.c, partial, tile };
  const wg: [number, number, number] = [Math.ceil(N / TN), Math.ceil(M / TM), batch * splits];
  const uniforms = matmulUniforms({ M, N, K, batch, strideA: d.batchA === 1 ? 0 : M * K, strideB: d.batchB === 1 ? 0 : K * N, strideC, kChunk, alpha, beta });
  if (!partial) {
    const inputs = [args.a, args.b];
    if (args.bias) inputs.push(args.bias);
    if (args.c) inputs.push(args.c);
    const [out] = runWgsl(backend, matmulKernel(variant), { inputs, outputs: [{ shape: outShape, dtype: 'float32' }], uniforms, workgroups: wg, name: 'peftjsMatMul' });
    return out;
  }
  const [scratch] = runWgsl(backend, matmulKernel(variant), {
    inputs: [args.a, args.b],
    outputs: [{ shape: [splits * batch * M * N], dtype: 'float32' }],
    uniforms,
    workgroups: wg,
    name: 'peftjsMatMulSplitK',
  });
  const w = vecOut ? 4 : 1;
  const total = (batch * M * N) / w;
  const inputs = [scratch];
  if (args.bias) inputs.push(args.bias);
  if (args.c) inputs.push(args.c);
  const [out] = runWgsl(backend, reduceKernel(vecOut, !!args.bias, !!args.c), {
    inputs,
    outputs: [{ shape: outShape, dtype: 'float32' }],
    uniforms: [
      { type: 'uint32', data: [total] },
      { type: 'uint32', data: [(M * N) / w] },
      { type: 'uint32', data: [N / w] },
      { type: 'uint32', data: [splits] },
      { type: 'uint32', data: [strideC / w] },
      { type: 'float32', data: [alpha] },
      { type: 'float32', data: [beta] },
    ],
    workgroups: dispatch1d(total, 256),
    name: 'peftjsMatMulReduce',
  });
  b.disposeData(scratch.dataId);
  return out;
}

/** The uniforms of `matmulKernel`, in its struct's order. */
export function matmulUniforms(u: { M: number; N: number; K: number; batch: number; strideA: number; strideB: number; strideC: number; kChunk: number; alpha: number; beta: number }) {
  return [
    { type: 'uint32' as const, data: [u.M] },
    { type: 'uint32' as const, data: [u.N] },
    { type: 'uint32' as const, data: [u.K] },
    { type: 'uint32' as const, data: [u.batch] },
    { type: 'uint32' as const, data: [u.strideA] },
    { type: 'uint32' as const, data: [u.strideB] },
    { type: 'uint32' as const, data: [u.strideC] },
    { type: 'uint32' as const, data: [u.kChunk] },
    { type: 'float32' as const, data: [u.alpha] },
    { type: 'float32' as const, data: [u.beta] },
  ];
}
