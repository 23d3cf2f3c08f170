/**
 * @peftjs/native: an optional native matmul for Node (prebuilt for Linux x64; built from source elsewhere). A Node-API addon (src/native/gemm.cc)
 * runs a cache-blocked SGEMM (AVX-512 or AVX2+FMA, chosen at run time; a portable fallback) over a
 * persistent thread pool, directly on tfjs's wasm heap (zero-copy). `installNativeKernels()` replaces the
 * wasm backend's `BatchMatMul` (and `_FusedMatMul`) kernels with it, so every matmul on wasm — models'
 * forwards, core's fast paths, tfjs's own gradients — runs natively; shapes and dtypes it does not handle
 * go to the original kernel. Without the addon (no prebuild for this platform and no build from source),
 * nothing changes and the status says how to build it.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prebuildPath, prebuildTag, sourceBuildPath } from '../prebuild.mjs';

/** The addon's functions (see src/native/gemm.cc). */
export interface NativeBinding {
  /** c[i] = op(a at aOffsets[i]) · op(b at bOffsets[i]) for i < batch; offsets default to i × stride. */
  gemm(
    a: Float32Array, b: Float32Array, c: Float32Array,
    batch: number, m: number, n: number, k: number,
    transposeA: boolean, transposeB: boolean,
    aStride: number, bStride: number,
    aOffsets?: Float64Array, bOffsets?: Float64Array,
  ): void;
  /** out[i] = a[·] op b[·] (op 0 add, 1 sub, 2 mul) over out.length, viewed as rows of C; each operand's
   * mode says how it is indexed: 0 full (i), 1 scalar (0), 2 a row of C (i % C), 3 one per row (i / C). */
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, C: number, aMode: number, bMode: number): void;
  /** out = op(x) over out.length: op 0 copy, 1 exp. */
  unary(op: number, x: Float32Array, out: Float32Array): void;
  /** out[b][c][r][d] = x[b][r][c][d]. */
  transpose(x: Float32Array, out: Float32Array, B: number, R: number, C: number, D: number): void;
  /** out[r] = sum (op 0) or max (op 1) of x[r][0..C). */
  reduce(op: number, x: Float32Array, out: Float32Array, R: number, C: number): void;
  /** The `peftjs.Rope` op: out = x·cos + cat(x2, x1)·sin (transposed: x·cos + swap(x·sin)), x [B, H, T, D],
   * tables [1 or B, 1, T, D]. */
  rope(x: Float32Array, cos: Float32Array, sin: Float32Array, out: Float32Array, B: number, H: number, T: number, D: number, perBatch: boolean, transposed: boolean): void;
  info(): NativeInfo;
  setThreads(n: number): NativeInfo;
  setIsa(isa: NativeIsa | 'auto'): NativeInfo;
}

export type NativeIsa = 'AVX-512' | 'AVX2' | 'scalar';

export interface NativeInfo {
  /** The micro-kernel in use. */
  isa: NativeIsa;
  /** Threads a product is split over (the calling thread included). */
  threads: number;
  /** What this CPU can run, best first. */
  supportedIsas: NativeIsa[];
}

export interface NativeStatus {
  installed: boolean;
  /** Why (not), in words. */
  reason: string;
  threads: number;
  /** 'AVX-512' | 'AVX2' | 'scalar', or '' when not installed. */
  isa: string;
  /** When installed: whether the addon is the package's prebuild or was built from source, and its file. */
  origin?: NativeOrigin;
  file?: string;
}

export interface InstallOptions {
  /** Threads per product (default PEFTJS_NUM_THREADS, else os.availableParallelism()). */
  threads?: number;
  /** Force a micro-kernel (default PEFTJS_NATIVE_ISA, else the best the CPU has). */
  isa?: NativeIsa | 'auto';
  /** Which wasm kernels to replace (default PEFTJS_NATIVE_KERNELS, a comma-separated list, else all of
   * NATIVE_KERNELS). A different list than the installed one reinstalls. */
  kernels?: readonly string[];
}

const env = (k: string): string | undefined => process.env[k];
const here = typeof __dirname === 'string' ? __dirname : dirname(fileURLToPath(import.meta.url));

let binding: NativeBinding | undefined;
let loadError: string | undefined;

/** The package's root folder (dist/ or src/ is one level down). */
const root = join(here, '..');

/** Where the addon was loaded from: a prebuild shipped in the package, or a build from source (install.mjs). */
export type NativeOrigin = 'prebuild' | 'source';
let origin: { kind: NativeOrigin; file: string } | undefined;

/** The addon file in use and whether it is the package's prebuild; undefined until one has loaded. */
export function nativeOrigin(): { kind: NativeOrigin; file: string } | undefined {
  return origin;
}

const firstLine = (e: unknown) => String((e as Error)?.message ?? e).split('\n')[0];

/**
 * Loads the addon (once): the prebuild for this platform (prebuilds/<platform>-<arch>[-<libc>]/), else the
 * one install.mjs built from source (build/). The reason says what a user can do when neither loads.
 */
export function loadNative(): { binding?: NativeBinding; reason: string } {
  if (binding) return { binding, reason: 'loaded' };
  if (loadError) return { reason: loadError };
  const tag = prebuildTag();
  const req = createRequire(join(here, 'index.js'));
  const tried: string[] = [];
  for (const [kind, file] of [['prebuild', prebuildPath(root)], ['source', sourceBuildPath(root)]] as const) {
    if (!existsSync(file)) continue;
    try {
      binding = req(file) as NativeBinding;
      origin = { kind, file };
      return { binding, reason: 'loaded' };
    } catch (e) {
      tried.push(`${file} does not load (${firstLine(e)})`);
    }
  }
  const how = 'install a C++ compiler (g++ or clang++) and Node\'s headers, then run `npm rebuild @peftjs/native` (or PEFTJS_NATIVE=0 to stop asking)';
  loadError = tried.length
    ? `the native matmul for ${tag} does not load: ${tried.join('; ')}; to build it for this system, ${how}`
    : `no native matmul for ${tag}: @peftjs/native ships no prebuild for it and none was built from source; ${how}`;
  return { reason: loadError };
}

// ---------------------------------------------------------------------------------------------------
// The wasm backend's heap as these kernels use it (tfjs-backend-wasm 4.x): outputs allocated in place and
// views of a tensor's memory, through the backend's own makeOutput / typedArrayFromHeap — the same two
// methods core's WasmHeapBackend (kernels/host.ts) types. This package does not depend on core (core loads
// it optionally), so it names them here.

interface WasmBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown };

/** The first `size` floats of t's memory (no copy); taken after any makeOutput, which may grow the heap. */
function heapView(be: WasmBackend, t: tf.TensorInfo, size: number): Float32Array {
  try {
    return be.typedArrayFromHeap({ dataId: t.dataId, shape: [size], dtype: 'float32' }) as Float32Array;
  } catch (e) {
    throw new Error('@peftjs/native: a tensor is not on the wasm backend', { cause: e });
  }
}

/** Offsets (in elements) of each broadcast batch entry in an operand of batch shape `dims`, or a stride. */
function batchOffsets(dims: number[], outDims: number[], matSize: number): { stride: number; offsets?: Float64Array } {
  const total = tf.util.sizeFromShape(outDims);
  const own = tf.util.sizeFromShape(dims);
  if (own === total) return { stride: matSize };
  if (own === 1) return { stride: 0 };
  // partial broadcasting ([2, 1] against [1, 3]): walk the output's batch indices
  const lead = outDims.length - dims.length;
  const strides = new Array<number>(dims.length);
  for (let i = dims.length - 1, s = matSize; i >= 0; i--) {
    strides[i] = dims[i] === 1 ? 0 : s;
    s *= dims[i];
  }
  const offsets = new Float64Array(total);
  const idx = new Array<number>(outDims.length).fill(0);
  for (let t = 0; t < total; t++) {
    let o = 0;
    for (let i = 0; i < dims.length; i++) o += idx[lead + i] * strides[i];
    offsets[t] = o;
    for (let i = outDims.length - 1; i >= 0; i--) {
      if (++idx[i] < outDims[i]) break;
      idx[i] = 0;
    }
  }
  return { stride: 0, offsets };
}

/** a·b on the native side into a new output tensor; undefined when the shapes are not ours to handle. */
function nativeMatMul(be: WasmBackend, a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean): tf.TensorInfo | undefined {
  if (!binding || a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) return undefined;
  const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const k2 = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (k !== k2) return undefined; // the original kernel reports the error
  const aDims = a.shape.slice(0, -2);
  const bDims = b.shape.slice(0, -2);
  let outDims: number[];
  try {
    outDims = tf.broadcast_util.assertAndGetBroadcastShape(aDims, bDims);
  } catch {
    return undefined;
  }
  const batch = tf.util.sizeFromShape(outDims);
  const ao = batchOffsets(aDims, outDims, m * k);
  const bo = batchOffsets(bDims, outDims, k * n);
  const out = be.makeOutput([...outDims, m, n], 'float32');
  if (batch * m * n === 0) return out;
  // views after makeOutput: an allocation may grow the heap (and replace its ArrayBuffer)
  const av = heapView(be, a, tf.util.sizeFromShape(a.shape));
  const bv = heapView(be, b, tf.util.sizeFromShape(b.shape));
  const cv = heapView(be, out, batch * m * n);
  binding.gemm(av, bv, cv, batch, m, n, k, transposeA, transposeB, ao.stride, bo.stride, ao.offsets, bo.offsets);
  return out;
}

/** The wasm kernels replaced, by name, to fall back to and to put back. */
let original: Map<string, tf.KernelConfig> | undefined;
let installedKey = '';
const fallback = (name: string, args: KernelArgs): tf.TensorInfo => original!.get(name)!.kernelFunc(args as never) as tf.TensorInfo;

function batchMatMulKernel(args: KernelArgs): tf.TensorInfo {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const { transposeA, transposeB } = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
  const out = nativeMatMul(args.backend as WasmBackend, a, b, !!transposeA, !!transposeB);
  if (out) return out;
  return fallback('BatchMatMul', args);
}

/** tfjs's fused matmul (tf.fused.matMul, layers' Dense): the product natively, then bias and linear/relu in JS. */
function fusedMatMulKernel(args: KernelArgs): tf.TensorInfo {
  const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { transposeA, transposeB, activation } = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean; activation?: string };
  const act = activation ?? 'linear';
  const be = args.backend as WasmBackend;
  const n = a && b ? (transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1]) : -1;
  const biasOk = !bias || (bias.dtype === 'float32' && bias.shape.length <= 1 && (tf.util.sizeFromShape(bias.shape) === n || tf.util.sizeFromShape(bias.shape) === 1));
  if (a && b && !preluActivationWeights && (act === 'linear' || act === 'relu') && biasOk) {
    const out = nativeMatMul(be, a, b, !!transposeA, !!transposeB);
    if (out) {
      const size = tf.util.sizeFromShape(out.shape);
      if ((bias || act === 'relu') && size > 0) {
        const c = heapView(be, out, size);
        const bv = bias ? heapView(be, bias, tf.util.sizeFromShape(bias.shape)) : undefined;
        const bn = bv?.length ?? 0;
        for (let i = 0; i < size; i++) {
          let v = c[i];
          if (bv) v += bn === 1 ? bv[0] : bv[i % n];
          c[i] = act === 'relu' && v < 0 ? 0 : v;
        }
      }
      return out;
    }
  }
  return fallback('_FusedMatMul', args);
}

// ---------------------------------------------------------------------------------------------------
// Element-wise and reduction kernels: float32 only, from MIN_ELEMENTS up (below, waking threads costs more
// than the loop); everything else goes to the original kernel.

/** Smallest output (or input, for reductions) the element-wise kernels take on. */
export const MIN_ELEMENTS = 32768;

const size = (shape: number[]): number => tf.util.sizeFromShape(shape);
const f32 = (...ts: tf.TensorInfo[]): boolean => ts.every((t) => t.dtype === 'float32');

function unaryKernel(name: string, op: number) {
  return (args: KernelArgs): tf.TensorInfo => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const n = size(x.shape);
    if (!binding || !f32(x) || n < MIN_ELEMENTS) return fallback(name, args);
    const be = args.backend as WasmBackend;
    const out = be.makeOutput(x.shape, 'float32');
    binding.unary(op, heapView(be, x, n), heapView(be, out, n));
    return out;
  };
}

/** How an operand of `shape` is read against the broadcast output `out`: [mode, C] (see NativeBinding.binary),
 * C = 0 when any C fits; undefined when the pattern is not one of these. */
function operandMode(shape: number[], out: number[]): [number, number] | undefined {
  const n = size(out);
  const own = size(shape);
  if (own === n) return [0, 0];
  if (own === 1) return [1, 0];
  const s = [...new Array<number>(out.length - shape.length).fill(1), ...shape];
  const k = s.findIndex((d) => d !== 1); // first real axis
  const j = s.length - [...s].reverse().findIndex((d) => d !== 1); // one past the last real axis
  // a trailing block that matches the output's: a row of C, repeated
  if (j === s.length && s.slice(k).every((d, i) => d === out[k + i]) && s.slice(0, k).every((d) => d === 1)) return [2, own];
  // a leading block that matches the output's, then 1s: one value per row of C = n / own
  if (k === 0 && s.slice(0, j).every((d, i) => d === out[i]) && s.slice(j).every((d) => d === 1)) return [3, n / own];
  return undefined;
}

function binaryKernel(name: string, op: number) {
  return (args: KernelArgs): tf.TensorInfo => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    if (!binding || !f32(a, b)) return fallback(name, args);
    let outShape: number[];
    try {
      outShape = tf.broadcast_util.assertAndGetBroadcastShape(a.shape, b.shape);
    } catch {
      return fallback(name, args);
    }
    const n = size(outShape);
    if (n < MIN_ELEMENTS) return fallback(name, args);
    const am = operandMode(a.shape, outShape);
    const bm = operandMode(b.shape, outShape);
    if (!am || !bm || (am[1] && bm[1] && am[1] !== bm[1])) return fallback(name, args);
    const C = am[1] || bm[1] || n;
    const be = args.backend as WasmBackend;
    const out = be.makeOutput(outShape, 'float32');
    binding.binary(op, heapView(be, a, size(a.shape)), heapView(be, b, size(b.shape)), heapView(be, out, n), C, am[0], bm[0]);
    return out;
  };
}

/** perm as a swap of two adjacent groups of axes: [B, R, C, D] with out[b][c][r][d] = x[b][r][c][d]. */
function swapGroups(shape: number[], perm: number[]): [number, number, number, number] | undefined {
  // axes of size 1 move freely: drop them
  const keep = shape.map((d, i) => (d === 1 ? -1 : i)).filter((i) => i >= 0);
  const rank = new Map(keep.map((a, i) => [a, i]));
  const p = perm.filter((a) => shape[a] !== 1).map((a) => rank.get(a)!);
  const dims = keep.map((a) => shape[a]);
  let lo = 0;
  while (lo < p.length && p[lo] === lo) lo++;
  if (lo === p.length) return undefined; // no-op perms: the original (a clone)
  let hi = p.length;
  while (p[hi - 1] === hi - 1) hi--;
  const q = p[lo];
  const len = hi - q; // the block [q, hi) comes first, then [lo, q)
  for (let i = 0; i < hi - lo; i++) if (p[lo + i] !== (i < len ? q + i : lo + i - len)) return undefined;
  const prod = (x: number[]) => x.reduce((u, v) => u * v, 1);
  return [prod(dims.slice(0, lo)), prod(dims.slice(lo, q)), prod(dims.slice(q, hi)), prod(dims.slice(hi))];
}

function transposeKernel(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { perm } = (args.attrs ?? {}) as { perm?: number[] };
  const n = size(x.shape);
  const g = binding && perm && perm.length === x.shape.length && f32(x) && n >= MIN_ELEMENTS ? swapGroups(x.shape, perm) : undefined;
  if (!g) return fallback('Transpose', args);
  const be = args.backend as WasmBackend;
  const out = be.makeOutput(perm!.map((a) => x.shape[a]), 'float32');
  binding!.transpose(heapView(be, x, n), heapView(be, out, n), ...g);
  return out;
}

function reduceKernel(name: 'Sum' | 'Max', op: number) {
  return (args: KernelArgs): tf.TensorInfo => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const attrs = (args.attrs ?? {}) as { axis?: number | number[]; reductionIndices?: number | number[]; keepDims?: boolean };
    const n = size(x.shape);
    if (!binding || !f32(x) || n < MIN_ELEMENTS) return fallback(name, args);
    const rank = x.shape.length;
    let axes: number[];
    try {
      axes = [...new Set(tf.util.parseAxisParam((name === 'Sum' ? attrs.axis : attrs.reductionIndices) ?? [], x.shape))].sort((u, v) => u - v);
    } catch {
      return fallback(name, args);
    }
    // trailing axes only ([..., rank-2, rank-1]), over a non-empty block
    if (axes.length === 0 || axes.some((a, i) => a !== rank - axes.length + i)) return fallback(name, args);
    const outShape = x.shape.slice(0, rank - axes.length);
    const C = n / size(outShape);
    const be = args.backend as WasmBackend;
    const out = be.makeOutput(attrs.keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape, 'float32');
    binding.reduce(op, heapView(be, x, n), heapView(be, out, size(outShape)), size(outShape), C);
    return out;
  };
}

/**
 * `peftjs.Rope` (@peftjs/models' RoPE op, a kernel-registry op): its CPU fast path is one pass in JS; this is
 * the same arithmetic threaded. Taken over only when the op's kernel is registered on wasm before the
 * install (importing @peftjs/models does that; initBackend runs after imports).
 */
function ropeKernel(args: KernelArgs): tf.TensorInfo {
  const { x, cos, sin } = args.inputs as { x: tf.TensorInfo; cos: tf.TensorInfo; sin: tf.TensorInfo };
  const n = size(x.shape);
  const [b, h, t, d] = x.shape;
  const cb = cos.shape[0];
  const ok = binding && f32(x, cos, sin) && n >= MIN_ELEMENTS && x.shape.length === 4 && d % 2 === 0 && cos.shape.length === 4 &&
    tf.util.arraysEqual(cos.shape, sin.shape) && (cb === 1 || cb === b) && cos.shape[1] === 1 && cos.shape[2] === t && cos.shape[3] === d;
  if (!ok) return fallback('peftjs.Rope', args);
  const be = args.backend as WasmBackend;
  const out = be.makeOutput(x.shape, 'float32');
  const tn = size(cos.shape);
  binding!.rope(heapView(be, x, n), heapView(be, cos, tn), heapView(be, sin, tn), heapView(be, out, n), b, h, t, d, cb !== 1, !!(args.attrs as { transpose?: boolean } | undefined)?.transpose);
  return out;
}

/** The kernels installed, by tfjs kernel name. */
const kernels: Record<string, (args: KernelArgs) => tf.TensorInfo> = {
  BatchMatMul: batchMatMulKernel,
  _FusedMatMul: fusedMatMulKernel,
  Exp: unaryKernel('Exp', 1),
  Add: binaryKernel('Add', 0),
  Sub: binaryKernel('Sub', 1),
  Multiply: binaryKernel('Multiply', 2),
  Transpose: transposeKernel,
  Sum: reduceKernel('Sum', 0),
  Max: reduceKernel('Max', 1),
  'peftjs.Rope': ropeKernel,
};

/** Every kernel the addon can take over from the wasm backend. */
export const NATIVE_KERNELS: readonly string[] = Object.keys(kernels);

function enabledKernels(opts: InstallOptions): string[] {
  const fromEnv = env('PEFTJS_NATIVE_KERNELS')?.split(',').map((k) => k.trim()).filter(Boolean);
  const want = opts.kernels ?? fromEnv ?? NATIVE_KERNELS;
  return NATIVE_KERNELS.filter((k) => want.includes(k));
}

function replaceKernel(name: string, kernelFunc: (args: KernelArgs) => tf.TensorInfo): tf.KernelConfig | undefined {
  const orig = tf.getKernel(name, 'wasm');
  if (!orig) return undefined;
  tf.unregisterKernel(name, 'wasm');
  // keep the original's setup (it binds its wasm function when the backend initialises) for the fallback
  tf.registerKernel({ kernelName: name, backendName: 'wasm', setupFunc: orig.setupFunc, disposeFunc: orig.disposeFunc, kernelFunc: kernelFunc as tf.KernelFunc });
  return orig;
}

function status(installed: boolean, reason: string): NativeStatus {
  const i = installed && binding ? binding.info() : undefined;
  return { installed, reason, threads: i?.threads ?? 0, isa: i?.isa ?? '', ...(i && origin ? { origin: origin.kind, file: origin.file } : {}) };
}

/**
 * Replaces the wasm backend's BatchMatMul and _FusedMatMul kernels with the native matmul, and its hottest
 * element-wise / reduction kernels (NATIVE_KERNELS) with multi-threaded native loops (idempotent;
 * a second call only applies new options). Import '@tensorflow/tfjs-backend-wasm' first. Returns what
 * was done and why; never throws for a missing addon. PEFTJS_NATIVE=0 turns it off.
 */
export function installNativeKernels(opts: InstallOptions = {}): NativeStatus {
  if (env('PEFTJS_NATIVE') === '0') return status(false, 'PEFTJS_NATIVE=0');
  const { binding: nb, reason } = loadNative();
  if (!nb) return status(false, reason);
  const envThreads = Number(env('PEFTJS_NUM_THREADS'));
  const threads = opts.threads ?? (envThreads > 0 ? envThreads : typeof availableParallelism === 'function' ? availableParallelism() : cpus().length);
  nb.setThreads(Math.max(1, Math.floor(threads)));
  const isa = opts.isa ?? (env('PEFTJS_NATIVE_ISA') as NativeIsa | undefined) ?? 'auto';
  try {
    nb.setIsa(isa);
  } catch (e) {
    return status(false, (e as Error).message);
  }
  const wanted = enabledKernels(opts);
  if (original && installedKey !== wanted.join()) uninstallNativeKernels();
  if (!original) {
    if (!tf.getKernel('BatchMatMul', 'wasm')) return status(false, "the wasm backend's kernels are not registered (import '@tensorflow/tfjs-backend-wasm' first)");
    original = new Map();
    for (const [name, f] of Object.entries(kernels)) {
      if (!wanted.includes(name)) continue;
      const orig = replaceKernel(name, f);
      if (orig) original.set(name, orig);
    }
    installedKey = wanted.join();
  }
  const i = nb.info();
  return status(true, `native matmul (${i.isa}, ${i.threads} thread${i.threads === 1 ? '' : 's'})`);
}

/** Puts the wasm backend's own kernels back. */
export function uninstallNativeKernels(): void {
  if (!original) return;
  for (const [name, cfg] of original) {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(cfg);
  }
  original = undefined;
}

/** The tfjs kernels (by name) the addon has taken over on wasm now. */
export function installedNativeKernels(): string[] {
  return original ? [...original.keys()] : [];
}

/** Whether the native kernels are installed now, with the addon's ISA and threads. */
export function nativeStatus(): NativeStatus {
  if (original) return status(true, 'installed');
  const { binding: nb, reason } = loadNative();
  return status(false, nb ? 'the addon loads but its kernels are not installed (installNativeKernels)' : reason);
}
