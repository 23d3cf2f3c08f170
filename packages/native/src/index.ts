/**
 * @peftjs/native: an optional native matmul for Node on x86-64 Linux. A Node-API addon (src/native/gemm.cc)
 * runs a cache-blocked SGEMM (AVX-512 or AVX2+FMA, chosen at run time; a portable fallback) over a
 * persistent thread pool, directly on tfjs's wasm heap (zero-copy). `installNativeKernels()` replaces the
 * wasm backend's `BatchMatMul` (and `_FusedMatMul`) kernels with it, so every matmul on wasm — models'
 * forwards, core's fast paths, tfjs's own gradients — runs natively; shapes and dtypes it does not handle
 * go to the original kernel. Without the addon (not built, other platform), nothing changes.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
}

export interface InstallOptions {
  /** Threads per product (default PEFTJS_NUM_THREADS, else os.availableParallelism()). */
  threads?: number;
  /** Force a micro-kernel (default PEFTJS_NATIVE_ISA, else the best the CPU has). */
  isa?: NativeIsa | 'auto';
}

const env = (k: string): string | undefined => process.env[k];
const here = typeof __dirname === 'string' ? __dirname : dirname(fileURLToPath(import.meta.url));

let binding: NativeBinding | undefined;
let loadError: string | undefined;

/** Loads the addon (once): dist/peftjs_native.node next to the built module, or ../dist from src/. */
export function loadNative(): { binding?: NativeBinding; reason: string } {
  if (binding) return { binding, reason: 'loaded' };
  if (loadError) return { reason: loadError };
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    loadError = `the native matmul is built for linux x64 only (this is ${process.platform} ${process.arch})`;
    return { reason: loadError };
  }
  const candidates = [join(here, 'peftjs_native.node'), join(here, '..', 'dist', 'peftjs_native.node')];
  const file = candidates.find((f) => existsSync(f));
  if (!file) {
    loadError = 'the addon is not built (dist/peftjs_native.node missing: run `npm run build -w @peftjs/native`, needs g++ and Node headers)';
    return { reason: loadError };
  }
  try {
    binding = createRequire(join(here, 'index.js'))(file) as NativeBinding;
    return { binding, reason: 'loaded' };
  } catch (e) {
    loadError = `the addon failed to load: ${(e as Error).message}`;
    return { reason: loadError };
  }
}

// ---------------------------------------------------------------------------------------------------
// The wasm backend's internals these kernels use (tfjs-backend-wasm 4.x, backend_wasm.js).

interface WasmBackend {
  dataIdMap: { get(dataId: object): { memoryOffset: number; shape: number[]; dtype: string } | undefined };
  wasm: { HEAPU8: Uint8Array };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown };

function heapView(be: WasmBackend, t: tf.TensorInfo, size: number): Float32Array {
  const d = be.dataIdMap.get(t.dataId);
  if (!d) throw new Error('@peftjs/native: a tensor is not on the wasm backend');
  return new Float32Array(be.wasm.HEAPU8.buffer, d.memoryOffset, size);
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

let original: { batchMatMul?: tf.KernelConfig; fused?: tf.KernelConfig } | undefined;

function batchMatMulKernel(args: KernelArgs): tf.TensorInfo {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const { transposeA, transposeB } = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
  const out = nativeMatMul(args.backend as WasmBackend, a, b, !!transposeA, !!transposeB);
  if (out) return out;
  return original!.batchMatMul!.kernelFunc(args as never) as tf.TensorInfo;
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
  return original!.fused!.kernelFunc(args as never) as tf.TensorInfo;
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
  return { installed, reason, threads: i?.threads ?? 0, isa: i?.isa ?? '' };
}

/**
 * Replaces the wasm backend's BatchMatMul and _FusedMatMul kernels with the native matmul (idempotent;
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
  if (!original) {
    if (!tf.getKernel('BatchMatMul', 'wasm')) return status(false, "the wasm backend's kernels are not registered (import '@tensorflow/tfjs-backend-wasm' first)");
    original = { batchMatMul: replaceKernel('BatchMatMul', batchMatMulKernel), fused: replaceKernel('_FusedMatMul', fusedMatMulKernel) };
  }
  const i = nb.info();
  return status(true, `native matmul (${i.isa}, ${i.threads} thread${i.threads === 1 ? '' : 's'})`);
}

/** Puts the wasm backend's own BatchMatMul and _FusedMatMul back. */
export function uninstallNativeKernels(): void {
  if (!original) return;
  for (const [name, cfg] of [['BatchMatMul', original.batchMatMul], ['_FusedMatMul', original.fused]] as const) {
    if (!cfg) continue;
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(cfg);
  }
  original = undefined;
}

/** Whether the native kernels are installed now, with the addon's ISA and threads. */
export function nativeStatus(): NativeStatus {
  if (original) return status(true, 'installed');
  const { binding: nb, reason } = loadNative();
  return status(false, nb ? 'the addon loads but its kernels are not installed (installNativeKernels)' : reason);
}
