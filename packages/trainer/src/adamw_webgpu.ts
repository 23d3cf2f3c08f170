import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, runWgsl, toTensor, webgpuBackend, type Uniform, type WgslKernel } from '@peftjs/core';
import type { AdamWStepScalars } from './optimizer';

/**
 * A fused, multi-tensor AdamW step on webgpu: one WGSL dispatch updates p, m and v in place for up to
 * four parameters (three when the step is gated or its bias corrections live on the device: 16 storage
 * buffers a stage on lavapipe; fewer where the device allows fewer).
 *
 * The arithmetic is the tfjs composition of `AdamW.updateParameter`, operation for operation in fp32
 * with the same fp32-rounded scalars (so it matches it to the last bit or so: each op in its own kernel
 * there, in registers here):
 *   decayed = p·decay;  m1 = m + (g − m)·(1 − β1);  v1 = v·β2 + g²·(1 − β2);
 *   p1 = decayed − (m1 / (√v1 / bc2Sqrt + ε))·stepSize
 * and a gated step (`s.apply` false on the device) leaves p, m and v untouched, with no readback.
 *
 * In-place writes need each variable to own its buffer: a variable sharing its data with another live
 * tensor (tf.variable(x) shares x's; a zero-copy clone shares too) is first given a copy of its own
 * (one copy dispatch, once). A CPU copy cached by an earlier read of a variable is dropped after the
 * update (tfjs-webgpu caches read values and would return the stale ones). One race remains: a
 * `data()` of a parameter still in flight when a step is issued caches the pre-step values when it
 * resolves, so a later read returns them until the next step (GPU computation never uses that cache):
 * await reads of parameters before stepping.
 */

export interface FusedAdamWParam {
  p: tf.Variable;
  g: tf.Tensor;
  m: tf.Variable;
  v: tf.Variable;
}

const WG = 256;

interface Variant {
  k: number;
  /** stepSize / bc2Sqrt read from device scalars (a gated step) rather than uniforms. */
  deviceScalars: boolean;
  /** 'i32' or 'f32': the dtype of the apply gate; null: ungated. */
  gate: 'i32' | 'f32' | null;
  decay: boolean;
}

const kernels = new Map<string, WgslKernel>();

function kernelFor(vr: Variant): WgslKernel {
  const key = `adamw-k${vr.k}-${vr.deviceScalars ? 'dev' : 'uni'}-${vr.gate ?? 'nogate'}-${vr.decay ? 'wd' : 'nowd'}`;
  let kern = kernels.get(key);
  if (kern) return kern;
  kern = {
    key,
    code: () => {
      const { k } = vr;
      const lines: string[] = [];
      let b = 0;
      for (let j = 0; j < k; j++) {
        lines.push(`@group(0) @binding(${b++}) var<storage, read_write> p${j}: array<f32>;`);
        lines.push(`@group(0) @binding(${b++}) var<storage, read_write> m${j}: array<f32>;`);
        lines.push(`@group(0) @binding(${b++}) var<storage, read_write> v${j}: array<f32>;`);
      }
      for (let j = 0; j < k; j++) lines.push(`@group(0) @binding(${b++}) var<storage, read> g${j}: array<f32>;`);
      if (vr.gate) lines.push(`@group(0) @binding(${b++}) var<storage, read> applyGate: array<${vr.gate}>;`);
      if (vr.deviceScalars) {
        lines.push(`@group(0) @binding(${b++}) var<storage, read> stepSizeT: array<f32>;`);
        lines.push(`@group(0) @binding(${b++}) var<storage, read> bc2SqrtT: array<f32>;`);
      }
      lines.push(`@group(0) @binding(${b++}) var<uniform> u: U;`);
      const fields = [
        ...Array.from({ length: k }, (_, j) => `n${j}: u32`),
        ...Array.from({ length: k }, (_, j) => `end${j}: u32`),
        'decay: f32',
        'c1: f32',
        'b2: f32',
        'c2: f32',
        'eps: f32',
        'stepSize: f32',
        'bc2Sqrt: f32',
      ];
      const segments = Array.from({ length: k }, (_, j) => {
        const start = j === 0 ? '0u' : `u.end${j - 1}`;
        return `${j === 0 ? '' : 'else '}if (wg < u.end${j}) {
    let i = (wg - ${start}) * ${WG}u + lid;
    if (i < u.n${j}) {
      let r = adam(p${j}[i], g${j}[i], m${j}[i], v${j}[i], ss, bc2);
      p${j}[i] = r.x;
      m${j}[i] = r.y;
      v${j}[i] = r.z;
    }
  }`;
      }).join(' ');
      const gateTest = vr.gate === 'f32' ? 'applyGate[0] == 0.0' : vr.gate === 'i32' ? 'applyGate[0] == 0' : '';
      return /* wgsl */ `
struct U { ${fields.join(', ')} }
${lines.join('\n')}
fn adam(p: f32, g: f32, m: f32, v: f32, ss: f32, bc2: f32) -> vec3<f32> {
  let decayed = ${vr.decay ? 'p * u.decay' : 'p'};
  let m1 = m + (g - m) * u.c1;
  let v1 = v * u.b2 + (g * g) * u.c2;
  let denom = sqrt(v1) / bc2 + u.eps;
  let p1 = decayed - (m1 / denom) * ss;
  return vec3<f32>(p1, m1, v1);
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${gateTest ? `if (${gateTest}) { return; }` : ''}
  let wg = wid.x + wid.y * nwg.x;
  let ss = ${vr.deviceScalars ? 'stepSizeT[0]' : 'u.stepSize'};
  let bc2 = ${vr.deviceScalars ? 'bc2SqrtT[0]' : 'u.bc2Sqrt'};
  ${segments}
}`;
    },
  };
  kernels.set(key, kern);
  return kern;
}

const copyKernel: WgslKernel = {
  key: 'adamw-own-copy',
  code: () => /* wgsl */ `
struct U { n: u32 }
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> u: U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WG}u;
  if (i < u.n) { y[i] = x[i]; }
}`,
};

interface BackendExtras {
  refCount(dataId: object): number;
  tensorMap: { get(dataId: object): { values?: unknown } | undefined };
  device: GPUDevice;
}

/** Gives `v` a buffer of its own when its data is shared with another live tensor. */
function ensureOwnBuffer(backend: BackendExtras, v: tf.Variable): void {
  if (backend.refCount(v.dataId) <= 1) return;
  const [copy] = runWgsl(backend, copyKernel, {
    inputs: [v],
    outputs: [{ shape: [...v.shape], dtype: 'float32' }],
    uniforms: [{ type: 'uint32', data: [v.size] }],
    workgroups: dispatch1d(v.size, WG),
    name: 'AdamWOwnCopy',
  });
  const t = toTensor(copy);
  v.assign(t);
  t.dispose();
}

/** Parameters per dispatch: 3 storage buffers written + 1 read per parameter, within the device's limit. */
export function fusedAdamWGroupSize(extraBuffers: number, backend?: unknown): number {
  const limit = (webgpuBackend(backend) as unknown as BackendExtras).device.limits.maxStorageBuffersPerShaderStage;
  return Math.max(0, Math.min(4, Math.floor((limit - extraBuffers) / 4)));
}

let enabled = true;

/** Turns the fused step off (or on): AdamW then runs its tfjs composition on webgpu too. */
export function setFusedAdamW(on: boolean): void {
  enabled = on;
}

/** Whether the fused step can run here: the webgpu backend and float32 parameters, moments and grads. */
export function canFuseAdamW(params: FusedAdamWParam[]): boolean {
  if (!enabled || tf.getBackend() !== 'webgpu') return false;
  return params.every(({ p, g, m, v }) => [p, g, m, v].every((t) => t.dtype === 'float32') && g.size === p.size && m.size === p.size && v.size === p.size);
}

/**
 * One AdamW step for `params` with the scalars AdamW.step computed (`s`): ⌈params / 4⌉ dispatches (or
 * / 3 when gated), updating p, m and v in place. Call it where AdamW.step would run updateParameter for
 * each parameter (inside its tidy); `canFuseAdamW(params)` must hold.
 */
export function adamwStepWebgpu(params: FusedAdamWParam[], s: AdamWStepScalars): void {
  const backend = webgpuBackend() as unknown as BackendExtras;
  const deviceScalars = typeof s.stepSize !== 'number' || typeof s.bc2Sqrt !== 'number';
  const gate = s.apply ? (s.apply.dtype === 'float32' ? 'f32' : 'i32') : null;
  const extra = (gate ? 1 : 0) + (deviceScalars ? 2 : 0);
  const k = fusedAdamWGroupSize(extra, backend);
  if (k < 1) throw new PeftError('BACKEND', `fused AdamW: the device binds too few storage buffers a stage (${extra + 4} needed)`);
  let stepSizeT: tf.Tensor | undefined;
  let bc2T: tf.Tensor | undefined;
  if (deviceScalars) {
    stepSizeT = typeof s.stepSize === 'number' ? tf.scalar(s.stepSize) : s.stepSize;
    bc2T = typeof s.bc2Sqrt === 'number' ? tf.scalar(s.bc2Sqrt) : s.bc2Sqrt;
  }
  const live = params.filter(({ p }) => p.size > 0);
  for (const { p, m, v } of live) for (const t of [p, m, v]) ensureOwnBuffer(backend, t);
  for (let at = 0; at < live.length; at += k) {
    const group = live.slice(at, at + k);
    const vr: Variant = { k: group.length, deviceScalars, gate, decay: s.decay !== null };
    const ends: number[] = [];
    let groups = 0;
    for (const { p } of group) ends.push((groups += Math.ceil(p.size / WG)));
    const f = (x: number): Uniform => ({ type: 'float32', data: [x] });
    const uniforms: Uniform[] = [
      ...group.map(({ p }): Uniform => ({ type: 'uint32', data: [p.size] })),
      ...ends.map((e): Uniform => ({ type: 'uint32', data: [e] })),
      f(s.decay ?? 1),
      f(1 - s.beta1),
      f(s.beta2),
      f(1 - s.beta2),
      f(s.eps),
      f(typeof s.stepSize === 'number' ? s.stepSize : 0),
      f(typeof s.bc2Sqrt === 'number' ? s.bc2Sqrt : 0),
    ];
    const inputs: tf.TensorInfo[] = group.map(({ g }) => g);
    if (s.apply) inputs.push(s.apply);
    if (deviceScalars) inputs.push(stepSizeT!, bc2T!);
    runWgsl(backend, kernelFor(vr), {
      inputs,
      outputs: group.flatMap(({ p, m, v }) => [p, m, v]),
      uniforms,
      workgroups: dispatch1d(groups, 1),
      name: 'AdamW',
    });
    // values cached on the CPU by an earlier read are stale now
    for (const { p, m, v } of group) for (const t of [p, m, v]) {
      const d = backend.tensorMap.get(t.dataId);
      if (d && d.values != null) d.values = null;
    }
  }
  if (stepSizeT && stepSizeT !== s.stepSize) stepSizeT.dispose();
  if (bc2T && bc2T !== s.bc2Sqrt) bc2T.dispose();
}
