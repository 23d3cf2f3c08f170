import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../../errors';

/**
 * Runs hand-written WGSL on tfjs's webgpu backend, in its command stream: the same command encoder and
 * compute pass as tfjs's own programs, its buffer pool, its deferred disposal, and its timestamp
 * queries (so `tf.profile` and `backend.time` report these kernels' GPU time by name).
 *
 * Unlike tfjs's `runWebGPUProgram` a kernel here has any number of outputs, may update existing tensors
 * in place (`read_write` bindings), and owns its whole WGSL source (no generated header).
 *
 * Binding order in the shader, all in `@group(0)`: outputs first (binding 0…), then inputs, then — when
 * `uniforms` are given — one uniform buffer at the last binding. Every binding must be used by the
 * shader (pipelines use the 'auto' layout, which drops unused bindings).
 *
 * Nothing here imports `@tensorflow/tfjs-backend-webgpu`: the backend object comes from the kernel call
 * (or `tf.backend()`), so core keeps webgpu optional.
 */

export type UniformType = 'int32' | 'uint32' | 'float32';
export interface Uniform {
  type: UniformType;
  data: number[];
}

export interface WgslKernel {
  /** Pipeline cache key: must change whenever `code()` would. */
  key: string;
  /** The whole WGSL module, entry point `main`. Called once per key and device. */
  code: () => string;
}

export interface NewOutput {
  shape: number[];
  dtype: tf.DataType;
}

export interface DispatchArgs {
  /** Read-only inputs (uploaded to the GPU first when they live on the CPU). */
  inputs: tf.TensorInfo[];
  /**
   * Outputs: a `{ shape, dtype }` allocates a new tensor; an existing TensorInfo is written in place
   * (bind it `read_write`; it must not also be an input: WebGPU forbids aliasing a writable binding).
   */
  outputs: (NewOutput | tf.TensorInfo)[];
  /** Uniform fields in declaration order (WGSL struct layout rules are applied: vec2 8-byte, vec3/4 16). */
  uniforms?: Uniform[];
  /** Workgroup counts [x, y, z]; use `dispatch1d` for a flat problem. */
  workgroups: [number, number, number];
  /** Name shown by profiles (defaults to the kernel key's first word). */
  name?: string;
}

/** The parts of tfjs-webgpu's WebGPUBackend this module touches (stable across tfjs 4.x). */
interface WebGPUBackendLike {
  device: GPUDevice;
  queue: GPUQueue;
  tensorMap: { get(dataId: object): { resource?: unknown; dtype: tf.DataType; shape: number[] } | undefined; has(dataId: object): boolean };
  commandEncoder: GPUCommandEncoder | null;
  computePassEncoder: GPUComputePassEncoder | null;
  dispatchCountInPass: number;
  commandQueueOwnedIds: WeakSet<object>;
  activeTimers: { name: string; query: Promise<number> }[] | null;
  supportTimestampQuery: boolean;
  querySet: GPUQuerySet | null;
  querySetCount: number;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: unknown): tf.TensorInfo;
  uploadToGPU(dataId: object): void;
  makeUniforms(u: Uniform[]): GPUBindingResource;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  getQueryTime(): Promise<number>;
}

/** The webgpu backend object, checked: `backend` from a kernel call, else the active backend. */
export function webgpuBackend(backend?: unknown): WebGPUBackendLike {
  const b = (backend ?? tf.backend()) as Partial<WebGPUBackendLike>;
  if (!b || !b.device || !b.tensorMap || typeof b.makeUniforms !== 'function') {
    throw new PeftError('BACKEND', `a WGSL kernel needs the webgpu backend (active: ${tf.getBackend()})`);
  }
  return b as WebGPUBackendLike;
}

interface CachedPipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}
interface DeviceCache {
  pipelines: Map<string, CachedPipeline>;
  maxWorkgroupsPerDim: number;
}
const deviceCaches = new WeakMap<GPUDevice, DeviceCache>();
const checkShaders = () => typeof process !== 'undefined' && process.env?.PEFTJS_WGSL_CHECK === '1';

/** Per-device cache: pipelines with their bind-group layouts, and the limits read once (each read of
 * `device.limits` crosses into Dawn). */
function cacheFor(device: GPUDevice): DeviceCache {
  let c = deviceCaches.get(device);
  if (!c) deviceCaches.set(device, (c = { pipelines: new Map(), maxWorkgroupsPerDim: device.limits.maxComputeWorkgroupsPerDimension }));
  return c;
}

function pipelineFor(device: GPUDevice, cache: DeviceCache, kernel: WgslKernel): CachedPipeline {
  const hit = cache.pipelines.get(kernel.key);
  if (hit) return hit;
  const code = kernel.code();
  const check = checkShaders();
  if (check) device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label: kernel.key });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: kernel.key });
  if (check) {
    void module.getCompilationInfo().then((info) => {
      for (const m of info.messages) if (m.type === 'error') console.error(`WGSL ${kernel.key}:${m.lineNum}:${m.linePos}: ${m.message}`);
    });
    void device.popErrorScope().then((e) => e && console.error(`WGSL ${kernel.key}: ${e.message}\n${code}`));
  }
  const entry = { pipeline, layout: pipeline.getBindGroupLayout(0) };
  cache.pipelines.set(kernel.key, entry);
  return entry;
}

/** Deferred-submit batch size, as tfjs-webgpu's WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE flag. */
function submitBatchSize(): number {
  const flags = (tf.env() as unknown as { flags: Record<string, unknown> }).flags;
  const v = flags['WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE'];
  if (typeof v === 'number') return v;
  try {
    return Number(tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE')) || 15;
  } catch {
    return 15;
  }
}

const isNew = (o: NewOutput | tf.TensorInfo): o is NewOutput => !('dataId' in o);

/** Bytes per element of a tfjs dtype as the webgpu backend stores it (bool and int32 as 32-bit). */
export function gpuBytesPerElement(dtype: tf.DataType): number {
  if (dtype === 'complex64') return 8;
  return 4;
}

/**
 * Records one dispatch of `kernel` in tfjs's command stream and returns the outputs (new ones are
 * owned by the caller: return them from a kernelFunc, or wrap with `tf.engine().makeTensorFromTensorInfo`).
 */
export function runWgsl(backendArg: unknown, kernel: WgslKernel, args: DispatchArgs): tf.TensorInfo[] {
  const b = webgpuBackend(backendArg);
  const n = args.outputs.length;
  const outputs: tf.TensorInfo[] = new Array(n);
  let empty = args.workgroups[0] === 0 || args.workgroups[1] === 0 || args.workgroups[2] === 0;
  for (let i = 0; i < n; i++) {
    const o = args.outputs[i];
    const fresh = isNew(o);
    const t = fresh ? b.makeTensorInfo(o.shape, o.dtype) : o;
    outputs[i] = t;
    if (tf.util.sizeFromShape(t.shape) === 0) empty = true;
    b.uploadToGPU(t.dataId);
    // an in-place write makes any CPU copy tfjs cached at a read stale
    if (!fresh) {
      const d = b.tensorMap.get(t.dataId) as { values?: unknown } | undefined;
      if (d) d.values = null;
    }
  }
  if (empty) return outputs;
  for (const i of args.inputs) b.uploadToGPU(i.dataId);
  // tfjs-webgpu casts int32/bool → float32 by sharing the integer buffer (its own programs read the
  // stored dtype); a WGSL kernel reading array<f32> would see integer bits, so convert those first
  let inputs = args.inputs;
  let converted: tf.TensorInfo[] | undefined;
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    const stored = b.tensorMap.get(t.dataId)?.dtype;
    if (t.dtype === 'float32' && (stored === 'int32' || stored === 'bool')) {
      if (!converted) {
        converted = [];
        inputs = [...inputs];
      }
      const f = intToFloat(b, t);
      converted.push(f);
      inputs[i] = f;
    }
  }
  const cache = cacheFor(b.device);
  const [wx, wy, wz] = args.workgroups;
  const limit = cache.maxWorkgroupsPerDim;
  if (wx > limit || wy > limit || wz > limit) {
    throw new PeftError('BACKEND', `${kernel.key}: dispatch [${args.workgroups}] exceeds the device's ${limit} workgroups per dimension`);
  }
  const { pipeline, layout } = pipelineFor(b.device, cache, kernel);
  const entries: GPUBindGroupEntry[] = [];
  const owned = b.commandQueueOwnedIds;
  const bind = (t: tf.TensorInfo) => {
    const d = b.tensorMap.get(t.dataId);
    if (!d || !d.resource) throw new PeftError('BACKEND', `${kernel.key}: a tensor has no GPU buffer`);
    entries.push({ binding: entries.length, resource: { buffer: d.resource as GPUBuffer } });
    owned.add(t.dataId);
  };
  for (const t of outputs) bind(t);
  for (const t of inputs) bind(t);
  if (args.uniforms?.length) entries.push({ binding: entries.length, resource: b.makeUniforms(args.uniforms.map((u) => ({ type: u.type, data: [...u.data] }))) });
  const bindGroup = b.device.createBindGroup({ layout, entries });

  const timed = b.activeTimers != null;
  b.ensureCommandEncoderReady();
  if (timed && b.supportTimestampQuery) {
    b.endComputePassEncoder();
    if (b.querySet == null) b.querySet = b.device.createQuerySet({ type: 'timestamp', count: b.querySetCount });
    b.computePassEncoder = b.commandEncoder!.beginComputePass({
      timestampWrites: { querySet: b.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
  } else if (!b.computePassEncoder) {
    b.computePassEncoder = b.commandEncoder!.beginComputePass({});
  }
  const pass = b.computePassEncoder!;
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(wx, wy, wz);
  b.dispatchCountInPass++;
  if (timed || b.dispatchCountInPass >= submitBatchSize()) {
    b.endComputePassEncoder();
    if (timed) b.activeTimers!.push({ name: args.name ?? kernel.key.split(/[\s:(]/)[0], query: b.getQueryTime() });
    else b.submitQueue();
  }
  // the conversions' buffers are released once the commands using them are submitted (tfjs defers it)
  if (converted) for (const c of converted) (b as unknown as { disposeData(id: object): void }).disposeData(c.dataId);
  return outputs;
}

const intToFloatKernel = {
  key: 'peftjs-i32-to-f32',
  code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<i32>;
struct U { n: u32 }
@group(0) @binding(2) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i < u.n) { y[i] = f32(x[i]); }
}`,
};

/** A float32 copy of a tensor whose buffer holds int32/bool values (tfjs's zero-copy cast). */
function intToFloat(b: WebGPUBackendLike, t: tf.TensorInfo): tf.TensorInfo {
  const n = tf.util.sizeFromShape(t.shape);
  const as: tf.TensorInfo = { dataId: t.dataId, shape: t.shape, dtype: 'int32' };
  return runWgsl(b, intToFloatKernel, { inputs: [as], outputs: [{ shape: t.shape, dtype: 'float32' }], uniforms: [{ type: 'uint32', data: [n] }], workgroups: dispatch1d(n, 256), name: 'CastIntToFloat' })[0];
}

/**
 * Workgroup counts for `n` independent items at `perWorkgroup` items a workgroup, folded into x and y
 * when x would pass 65,535. In WGSL recover the flat workgroup index as
 * `wid.x + wid.y * nwg.x` (`@builtin(workgroup_id) wid`, `@builtin(num_workgroups) nwg`), and skip
 * indices ≥ n.
 */
export function dispatch1d(n: number, perWorkgroup: number, maxPerDim = 65535): [number, number, number] {
  const groups = Math.ceil(n / perWorkgroup);
  if (groups <= maxPerDim) return [groups, 1, 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y, 1];
}

/** Wraps TensorInfos returned by runWgsl as tensors the engine tracks (for use outside a kernelFunc). */
export function toTensor(info: tf.TensorInfo): tf.Tensor {
  return tf.engine().makeTensorFromTensorInfo(info);
}

/** The GPU features of the webgpu device tfjs uses (e.g. 'subgroups', 'timestamp-query'). */
export function deviceFeatures(backend?: unknown): Set<string> {
  const b = webgpuBackend(backend);
  return new Set([...(b.device.features as unknown as Iterable<string>)]);
}
