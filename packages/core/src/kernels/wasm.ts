import * as tf from '@tensorflow/tfjs';
import { hostBackend, wasmHeapBackend, type HostValues, type WasmHeapBackend } from './host';

/**
 * Kernels a transformer's training needs that the tfjs wasm backend (4.22) lacks, gets wrong or runs far
 * below what the copy costs, written in JS on the backend's memory:
 * - UnsortedSegmentSum: missing, and it is the gradient of gather, so no embedding could train on wasm.
 * - OneHot with a float32 dtype: wasm writes the integer bit patterns into a float buffer (1 reads as 1.4e-45).
 * - Identity, and Cast to the same dtype: wasm copies the buffer (≈ 70 ms of a 500 ms LoRA step on
 *   tiny-llama: tfjs's gradients clone and cast freely). They share the data, as the cpu backend's do
 *   (tfjs kernels never write into an input; the buffer is reference-counted, as Reshape's already is).
 * - GatherV2 along axis 0 (an embedding lookup, the loss's label pick): wasm's generic gather took ≈ 18 ms
 *   for 1,024 rows of 256 floats; whole rows are copied here.
 */
type KernelArgs = { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown };

/** The same data under a new tensor (reference-counted). */
function shareData(backend: unknown, x: tf.TensorInfo, dtype: tf.DataType = x.dtype): tf.TensorInfo {
  (backend as WasmHeapBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype };
}

function identity(args: KernelArgs, fallback: tf.KernelFunc): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  if (x.dtype === 'string') return fallback(args as never) as tf.TensorInfo;
  return shareData(args.backend, x);
}

function cast(args: KernelArgs, fallback: tf.KernelFunc): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { dtype } = args.attrs as { dtype: tf.DataType };
  if (dtype === x.dtype && dtype !== 'string') return shareData(args.backend, x);
  return fallback(args as never) as tf.TensorInfo;
}

function gatherRows(args: KernelArgs, fallback: tf.KernelFunc): tf.TensorInfo {
  const be = args.backend as WasmHeapBackend;
  const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
  const { axis, batchDims } = args.attrs as { axis: number; batchDims: number };
  const ax = axis < 0 ? axis + x.shape.length : axis;
  if (ax !== 0 || (batchDims ?? 0) !== 0 || x.shape.length === 0 || (x.dtype !== 'float32' && x.dtype !== 'int32')) return fallback(args as never) as tf.TensorInfo;
  const rows = x.shape[0];
  const inner = tf.util.sizeFromShape(x.shape.slice(1));
  const idx = be.readSync(indices.dataId);
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i];
    if (!(v >= 0 && v <= rows - 1)) throw new Error(`GatherV2: the index value ${v} is not in [0, ${rows - 1}]`);
  }
  const out = be.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
  // views after makeOutput: allocating may grow (and so detach) the heap
  const src = be.typedArrayFromHeap(x);
  const dst = be.typedArrayFromHeap(out);
  if (inner === 1) {
    for (let i = 0; i < idx.length; i++) dst[i] = src[idx[i]];
  } else {
    for (let i = 0; i < idx.length; i++) dst.set(src.subarray(idx[i] * inner, idx[i] * inner + inner), i * inner);
  }
  return out;
}

function unsortedSegmentSum({ inputs, attrs, backend }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown }): tf.TensorInfo {
  const be = hostBackend(backend, 'UnsortedSegmentSum');
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = (attrs as { numSegments: number }).numSegments;
  const xv = be.readSync(x.dataId);
  const ids = be.readSync(segmentIds.dataId);
  const n = ids.length;
  const inner = n === 0 ? 0 : xv.length / n;
  const shape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
  const heap = wasmHeapBackend(backend);
  // on wasm the sums go straight into the output's memory (no second buffer to copy in)
  const info = heap ? heap.makeOutput(shape, x.dtype) : undefined;
  const out = info ? heap!.typedArrayFromHeap(info) : x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
  if (info) out.fill(0);
  for (let i = 0; i < n; i++) {
    const seg = ids[i];
    if (seg < 0 || seg >= numSegments) continue; // as TensorFlow: out-of-range ids are dropped
    const o = seg * inner;
    const s = i * inner;
    for (let j = 0; j < inner; j++) out[o + j] += xv[s + j];
  }
  if (info) return info;
  return { dataId: be.write(out as HostValues, shape, x.dtype), shape, dtype: x.dtype };
}

function oneHot({ inputs, attrs, backend }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown }): tf.TensorInfo {
  const be = hostBackend(backend, 'OneHot');
  const { indices } = inputs as { indices: tf.TensorInfo };
  const { depth, onValue, offValue, dtype } = attrs as { depth: number; onValue: number; offValue: number; dtype: tf.DataType };
  const idx = be.readSync(indices.dataId);
  const out = dtype === 'int32' ? new Int32Array(idx.length * depth) : new Float32Array(idx.length * depth);
  if (offValue !== 0) out.fill(offValue);
  for (let i = 0; i < idx.length; i++) if (idx[i] >= 0 && idx[i] < depth) out[i * depth + idx[i]] = onValue;
  const shape = [...indices.shape, depth];
  return { dataId: be.write(out, shape, dtype), shape, dtype };
}

let installed = false;

/** Installs the wasm kernel fixes (idempotent); `initBackend` calls it when it selects wasm. */
export function ensureWasmKernels(): void {
  if (installed) return;
  installed = true;
  const has = (name: string) => tf.getKernelsForBackend('wasm').some((k) => k.kernelName === name);
  if (!has('UnsortedSegmentSum')) tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSum as tf.KernelFunc });
  if (has('OneHot')) tf.unregisterKernel('OneHot', 'wasm');
  tf.registerKernel({ kernelName: 'OneHot', backendName: 'wasm', kernelFunc: oneHot as tf.KernelFunc });
  // wrapped, keeping the original's setup (it binds its wasm function when the backend initialises) for the fallback
  const wrap = (name: string, f: (args: KernelArgs, fallback: tf.KernelFunc) => tf.TensorInfo) => {
    const k = tf.getKernel(name, 'wasm');
    if (!k) return;
    const fallback = k.kernelFunc;
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ ...k, kernelFunc: ((args: KernelArgs) => f(args, fallback)) as tf.KernelFunc });
  };
  wrap('Identity', identity);
  wrap('Cast', cast);
  wrap('GatherV2', gatherRows);
}
