import * as tf from '@tensorflow/tfjs';

/**
 * Kernels a transformer's training needs that the tfjs wasm backend (4.22) lacks or gets wrong, written
 * in JS on the backend's memory:
 * - UnsortedSegmentSum: missing, and it is the gradient of gather, so no embedding could train on wasm.
 * - OneHot with a float32 dtype: wasm writes the integer bit patterns into a float buffer (1 reads as 1.4e-45).
 */
interface WasmLikeBackend {
  readSync(dataId: object): ArrayLike<number>;
  write(values: Float32Array | Int32Array, shape: number[], dtype: tf.DataType): object;
}

function unsortedSegmentSum({ inputs, attrs, backend }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown }): tf.TensorInfo {
  const be = backend as WasmLikeBackend;
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = (attrs as { numSegments: number }).numSegments;
  const xv = be.readSync(x.dataId);
  const ids = be.readSync(segmentIds.dataId);
  const n = ids.length;
  const inner = n === 0 ? 0 : xv.length / n;
  const shape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
  const out = x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
  for (let i = 0; i < n; i++) {
    const seg = ids[i];
    if (seg < 0 || seg >= numSegments) continue; // as TensorFlow: out-of-range ids are dropped
    const o = seg * inner;
    const s = i * inner;
    for (let j = 0; j < inner; j++) out[o + j] += xv[s + j];
  }
  return { dataId: be.write(out, shape, x.dtype), shape, dtype: x.dtype };
}

function oneHot({ inputs, attrs, backend }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown }): tf.TensorInfo {
  const be = backend as WasmLikeBackend;
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
}
