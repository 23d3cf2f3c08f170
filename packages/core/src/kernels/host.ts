import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../errors';

/**
 * What JS kernels use of the backends that keep tensors in host memory (tfjs-backend-cpu and
 * tfjs-backend-wasm 4.x), typed in one place: core's fast paths and wasm fixes, models' RoPE kernel,
 * quant's byte unpacking and LoRA's fast path all go through these helpers rather than casting the
 * backend to a shape of their own.
 */

export type HostValues = Float32Array | Int32Array | Uint8Array;

/** The data API the cpu and wasm backends share. */
export interface HostBackend {
  /** A copy of the data (cpu: the array itself). A kernel's own read, inside the backend: no GPU sync. */
  readSync(dataId: tf.DataId): HostValues;
  write(values: HostValues, shape: number[], dtype: tf.DataType): tf.DataId;
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
}

/** The wasm backend's heap: outputs allocated in place and views of a tensor's memory (no copy). */
export interface WasmHeapBackend extends HostBackend {
  incRef(dataId: tf.DataId): void;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  /** A view of the tensor's memory; allocating (makeOutput) may grow the heap and detach earlier views. */
  typedArrayFromHeap(info: tf.TensorInfo): HostValues;
}

/** The backend a kernel received, as a host-memory backend; a clear error for any other (webgpu, webgl). */
export function hostBackend(backend: unknown, kernel = 'peftjs kernel'): HostBackend {
  const b = backend as Partial<HostBackend> | null;
  if (!b || typeof b.readSync !== 'function' || typeof b.write !== 'function' || typeof b.disposeData !== 'function') {
    throw new PeftError('BACKEND', `${kernel}: backend ${tf.getBackend()} does not keep tensors in host memory (cpu or wasm expected)`);
  }
  return b as HostBackend;
}

/** The wasm backend's heap API, or undefined on any other backend (the cpu backend has no heap). */
export function wasmHeapBackend(backend: unknown): WasmHeapBackend | undefined {
  const b = backend as Partial<WasmHeapBackend> | null;
  return b && typeof b.typedArrayFromHeap === 'function' && typeof b.makeOutput === 'function' && typeof b.incRef === 'function' ? (b as WasmHeapBackend) : undefined;
}

/** Runs the active backend's own kernel `name` on TensorInfos: what a fast path composed of kernels calls. */
export function runBackendKernel(name: string, backend: unknown, inputs: Record<string, tf.TensorInfo>, attrs: Record<string, unknown> = {}): tf.TensorInfo {
  const k = tf.getKernel(name, tf.getBackend());
  if (!k) throw new PeftError('BACKEND', `peftjs fast path: kernel ${name} is missing on backend ${tf.getBackend()}`);
  return k.kernelFunc({ inputs: inputs as never, backend: backend as never, attrs: attrs as never }) as tf.TensorInfo;
}

/** Frees a kernel's intermediate results (TensorInfos it made and does not return). */
export function disposeInfos(backend: unknown, ...infos: tf.TensorInfo[]): void {
  const b = backend as { disposeData(dataId: tf.DataId): unknown };
  for (const i of infos) b.disposeData(i.dataId);
}

/** A view of `t` as [rows, last] (the same data; kernels only read the shape). */
export function view2d(t: tf.TensorInfo): tf.TensorInfo {
  const last = t.shape[t.shape.length - 1];
  return { dataId: t.dataId, shape: [tf.util.sizeFromShape(t.shape) / last, last], dtype: t.dtype };
}

/** A float32 scalar written to a host backend, for kernels that take a tensor operand. */
export function writeScalar(backend: unknown, v: number): tf.TensorInfo {
  const dataId = hostBackend(backend).write(new Float32Array([v]), [], 'float32');
  return { dataId, shape: [], dtype: 'float32' };
}
