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

/**
 * Running peak of GPU bytes in use. On webgpu it is exact: once a tracker has sampled there, every buffer
 * tfjs-webgpu's pool hands out updates it, so the peak inside a backward pass is seen too (the analog of
 * torch.cuda's max_memory_allocated); elsewhere it is the largest of the samples taken.
 */
export interface PeakMemoryTracker {
  /** Takes a sample now (no-op off the GPU); on webgpu the first one starts the exact watch. */
  sample(): void;
  /** The most bytes in use since the tracker's first sample or its last reset (0 when nothing was sampled on a GPU). */
  readonly peakBytes: number;
  /** bytesAllocated (the pool: in use + free, the analog of max_memory_reserved) at the latest sample. */
  readonly allocatedBytes: number;
  /** Whether any sample came from a GPU backend. */
  readonly onGpu: boolean;
  /** Starts a new window at the bytes in use now. */
  reset(): void;
}

interface PeakState {
  peak: number;
}
/** Trackers watching buffer acquisitions (weakly held: a dropped tracker stops costing anything). */
const watchers = new Set<WeakRef<PeakState>>();
const hookedPools = new WeakSet<object>();

/** Wraps the active webgpu backend's buffer pool once, so that every acquisition updates the watchers' peaks. */
function watchWebgpuPool(): void {
  if (tf.getBackend() !== 'webgpu') return;
  const bm = (tf.backend() as unknown as { bufferManager?: { numBytesUsed: number; acquireBuffer: (...a: unknown[]) => unknown } }).bufferManager;
  if (!bm || hookedPools.has(bm)) return;
  hookedPools.add(bm);
  const acquire = bm.acquireBuffer;
  bm.acquireBuffer = function (this: unknown, ...a: unknown[]) {
    const r = acquire.apply(this, a);
    const used = bm.numBytesUsed;
    for (const w of watchers) {
      const st = w.deref();
      if (!st) watchers.delete(w);
      else if (used > st.peak) st.peak = used;
    }
    return r;
  };
}

/** A tracker of the peak GPU bytes in use; call `sample()` at the points that matter (at least once at the start). */
export function createPeakMemoryTracker(): PeakMemoryTracker {
  const state: PeakState = { peak: 0 };
  let allocated = 0;
  let onGpu = false;
  let watching = false;
  return {
    sample() {
      const m = gpuMemory();
      if (!m) return;
      onGpu = true;
      if (!watching && m.backend === 'webgpu') {
        watchWebgpuPool();
        watchers.add(new WeakRef(state));
        watching = true;
      }
      if (m.bytesInUse > state.peak) state.peak = m.bytesInUse;
      allocated = m.bytesAllocated;
    },
    get peakBytes() {
      return state.peak;
    },
    get allocatedBytes() {
      return allocated;
    },
    get onGpu() {
      return onGpu;
    },
    reset() {
      state.peak = gpuMemory()?.bytesInUse ?? 0;
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
