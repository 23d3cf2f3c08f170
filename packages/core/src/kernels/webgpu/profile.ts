import * as tf from '@tensorflow/tfjs';
import { webgpuBackend } from './runner';

/**
 * A per-kernel GPU profile of whatever runs between `start()` and `stop()` on the webgpu backend, from
 * GPU timestamps: every dispatch (tfjs's own programs and our WGSL kernels) gets its own timestamped
 * compute pass, as tfjs-webgpu does inside `tf.profile`. Kernels are named by program (tfjs's
 * program class plus its op, e.g. `BinaryOpProgram(MUL)`; ours by the name given to `runWgsl`).
 *
 * Profiling changes the timing it measures only by the extra pass and query per dispatch (each kernel's
 * figure is its own GPU time; the sum is the GPU-busy time of the step). Compare the sum with the
 * step's wall time without profiling to see how much is dispatch overhead on the CPU.
 */
export interface KernelTime {
  name: string;
  count: number;
  ms: number;
}
export interface GpuProfile {
  /** Dispatches recorded. */
  dispatches: number;
  /** Sum of every dispatch's GPU time. */
  gpuMs: number;
  /** Per kernel name, largest total first. */
  kernels: KernelTime[];
  /** Whether the device had timestamp queries (without them every time is 0). */
  timestamps: boolean;
}

interface TimerEntry {
  name: string;
  query: Promise<number>;
}

/** Labels a tfjs program by the engine kernel that ran it and the program class. */
function programLabel(kernel: string | undefined, program: { constructor: { name: string } }): string {
  const cls = program.constructor?.name ?? 'program';
  return kernel ? `${kernel} (${cls})` : cls;
}

export class GpuProfiler {
  private entries: TimerEntry[] | null = null;
  private restore: (() => void) | null = null;

  /** Starts recording (throws when the active backend is not webgpu). */
  start(): void {
    const b = webgpuBackend() as unknown as {
      activeTimers: TimerEntry[] | null;
      recordAndSubmit: (...a: unknown[]) => void;
    };
    if (this.entries) throw new Error('GpuProfiler: already started');
    const entries: TimerEntry[] = [];
    this.entries = entries;
    b.activeTimers = entries;
    // the engine kernel running now names tfjs's programs (BinaryOpProgram alone says nothing)
    const engine = tf.engine() as unknown as { runKernel: (name: string, ...a: unknown[]) => unknown };
    const runKernel = engine.runKernel;
    const stack: string[] = [];
    engine.runKernel = function (this: unknown, name: string, ...a: unknown[]) {
      stack.push(name);
      try {
        return runKernel.call(this, name, ...a);
      } finally {
        stack.pop();
      }
    };
    const original = b.recordAndSubmit;
    b.recordAndSubmit = function (this: unknown, program: unknown, ...rest: unknown[]) {
      const before = entries.length;
      original.call(this, program, ...rest);
      if (entries.length > before) entries[entries.length - 1].name = programLabel(stack[stack.length - 1], program as never);
    };
    this.restore = () => {
      b.recordAndSubmit = original;
      engine.runKernel = runKernel;
      b.activeTimers = null;
    };
  }

  /** Stops recording and resolves every dispatch's GPU time. */
  async stop(): Promise<GpuProfile> {
    const entries = this.entries;
    if (!entries) throw new Error('GpuProfiler: not started');
    this.restore?.();
    this.entries = null;
    this.restore = null;
    const times = await Promise.all(entries.map((e) => e.query));
    const by = new Map<string, KernelTime>();
    let gpuMs = 0;
    entries.forEach((e, i) => {
      const k = by.get(e.name) ?? { name: e.name, count: 0, ms: 0 };
      k.count++;
      k.ms += times[i];
      gpuMs += times[i];
      by.set(e.name, k);
    });
    const timestamps = !!(webgpuBackend() as unknown as { supportTimestampQuery: boolean }).supportTimestampQuery;
    return { dispatches: entries.length, gpuMs, kernels: [...by.values()].sort((a, b) => b.ms - a.ms), timestamps };
  }
}

/** Profiles one call of `fn` (sync or async) on the webgpu backend. */
export async function profileGpu<T>(fn: () => T | Promise<T>): Promise<{ result: T; profile: GpuProfile }> {
  const p = new GpuProfiler();
  p.start();
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    await p.stop();
    throw e;
  }
  return { result, profile: await p.stop() };
}

/** A text table of a profile: the `top` heaviest kernels with count, total ms and share. */
export function formatGpuProfile(p: GpuProfile, top = 25): string {
  const lines = [`${p.dispatches} dispatches, ${p.gpuMs.toFixed(2)} ms of GPU time${p.timestamps ? '' : ' (no timestamp-query: times are 0)'}`];
  for (const k of p.kernels.slice(0, top)) {
    lines.push(`${k.ms.toFixed(3).padStart(10)} ms ${((100 * k.ms) / Math.max(p.gpuMs, 1e-9)).toFixed(1).padStart(5)} % ${String(k.count).padStart(6)}×  ${k.name}`);
  }
  if (p.kernels.length > top) {
    const rest = p.kernels.slice(top);
    lines.push(`${rest.reduce((a, k) => a + k.ms, 0).toFixed(3).padStart(10)} ms in ${rest.length} other kernels`);
  }
  return lines.join('\n');
}
