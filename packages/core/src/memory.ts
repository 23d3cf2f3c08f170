import * as tf from '@tensorflow/tfjs';

/** Device memory of the active backend, from `tf.memory()` (no GPU work, no readback). */
export interface GpuMemory {
  backend: string;
  /** Bytes of GPU buffers held by live tensors (tfjs-webgpu's numBytesInGPU). */
  bytesInUse: number;
  /** Bytes of every GPU buffer the backend's pool holds, free ones included (numBytesAllocatedInGPU). */
  bytesAllocated: number;
  numTensors: number;
}

/**
 * The GPU memory figures of the active backend, or null on a backend without GPU buffers (cpu, wasm).
 * Cheap: it reads counters that tfjs keeps, so it can be sampled several times per training step.
 */
export function gpuMemory(): GpuMemory | null {
  const m = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number; numBytesAllocatedInGPU?: number; numBytesInGPUAllocated?: number };
  if (typeof m.numBytesInGPU !== 'number') return null;
  return {
    backend: tf.getBackend(),
    bytesInUse: m.numBytesInGPU,
    bytesAllocated: m.numBytesAllocatedInGPU ?? m.numBytesInGPUAllocated ?? m.numBytesInGPU,
    numTensors: m.numTensors,
  };
}

/** Running peak of GPU bytes in use over the samples taken (see trackPeakMemory). */
export interface PeakMemoryTracker {
  /** Takes a sample now (no-op off the GPU). */
  sample(): void;
  /** The largest bytesInUse sampled since the last reset (0 when nothing was sampled on a GPU). */
  readonly peakBytes: number;
  /** bytesAllocated at the latest sample. */
  readonly allocatedBytes: number;
  /** Whether any sample came from a GPU backend. */
  readonly onGpu: boolean;
  /** Starts a new window (the next sample sets the peak). */
  reset(): void;
}

/** A tracker of the peak GPU bytes in use; call `sample()` at the points that matter (after forward, backward, update). */
export function createPeakMemoryTracker(): PeakMemoryTracker {
  let peak = 0;
  let allocated = 0;
  let onGpu = false;
  return {
    sample() {
      const m = gpuMemory();
      if (!m) return;
      onGpu = true;
      if (m.bytesInUse > peak) peak = m.bytesInUse;
      allocated = m.bytesAllocated;
    },
    get peakBytes() {
      return peak;
    },
    get allocatedBytes() {
      return allocated;
    },
    get onGpu() {
      return onGpu;
    },
    reset() {
      peak = 0;
    },
  };
}

/**
 * Runs `fn` with a peak tracker that samples before and after it (and wherever `fn` calls
 * `tracker.sample()`), returning fn's result and the peak bytes in use (0 off the GPU).
 */
export async function trackPeakMemory<T>(fn: (tracker: PeakMemoryTracker) => T | Promise<T>): Promise<{ result: T; peakBytes: number; allocatedBytes: number }> {
  const tracker = createPeakMemoryTracker();
  tracker.sample();
  const result = await fn(tracker);
  tracker.sample();
  return { result, peakBytes: tracker.peakBytes, allocatedBytes: tracker.allocatedBytes };
}
