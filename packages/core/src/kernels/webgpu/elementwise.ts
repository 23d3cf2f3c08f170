import * as tf from '@tensorflow/tfjs';
import { dispatch1d, runWgsl } from './runner';

/**
 * Leaner dispatches for tfjs's own element-wise `Add` and `Multiply` on webgpu, in the one case that
 * dominates a training step: two float32 tensors of the same shape (the backward pass accumulating the
 * gradients of a tensor used twice, residual connections), and a float32 tensor with a scalar that still
 * lives on the CPU (`tf.mul(x, 2)`: the scalar goes in as a uniform instead of an upload to a new GPU
 * buffer) or already on the GPU (read from its buffer: the gradient-clipping coefficient times each gradient). Every other case — broadcasting, int32, complex — runs tfjs's kernel unchanged. The results
 * are the same IEEE operations, so bit-identical to tfjs's.
 *
 * Installed by `installWebgpuElementwise()` (initBackend does it when it picks webgpu); switched back
 * with `uninstallWebgpuElementwise()`.
 */

type BinaryKind = 'Add' | 'Multiply';
const OPS: Record<BinaryKind, string> = { Add: '+', Multiply: '*' };

function pairKernel(kind: BinaryKind, vec4: boolean) {
  const t = vec4 ? 'vec4<f32>' : 'f32';
  return {
    key: `peftjs-ew-${kind}-${vec4 ? 'v4' : 's'}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<${t}>;
@group(0) @binding(1) var<storage, read> a: array<${t}>;
@group(0) @binding(2) var<storage, read> b: array<${t}>;
struct U { n: u32 }
@group(0) @binding(3) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i < u.n) { y[i] = a[i] ${OPS[kind]} b[i]; }
}`,
  };
}

function scalarKernel(kind: BinaryKind, vec4: boolean, scalarFirst: boolean) {
  const t = vec4 ? 'vec4<f32>' : 'f32';
  const expr = scalarFirst ? `${t}(u.s) ${OPS[kind]} a[i]` : `a[i] ${OPS[kind]} ${t}(u.s)`;
  return {
    key: `peftjs-ew-${kind}-scalar${scalarFirst ? 'L' : 'R'}-${vec4 ? 'v4' : 's'}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<${t}>;
@group(0) @binding(1) var<storage, read> a: array<${t}>;
struct U { n: u32, s: f32 }
@group(0) @binding(2) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i < u.n) { y[i] = ${expr}; }
}`,
  };
}

function scalarBufferKernel(kind: BinaryKind, vec4: boolean, scalarFirst: boolean) {
  const t = vec4 ? 'vec4<f32>' : 'f32';
  const expr = scalarFirst ? `${t}(s[0]) ${OPS[kind]} a[i]` : `a[i] ${OPS[kind]} ${t}(s[0])`;
  return {
    key: `peftjs-ew-${kind}-gpuscalar${scalarFirst ? 'L' : 'R'}-${vec4 ? 'v4' : 's'}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<${t}>;
@group(0) @binding(1) var<storage, read> a: array<${t}>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
struct U { n: u32 }
@group(0) @binding(3) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i < u.n) { y[i] = ${expr}; }
}`,
  };
}

interface TensorData {
  values?: ArrayLike<number> | null;
  resource?: unknown;
  dtype: string;
}

/** A scalar float32 whose value is still on the CPU (not uploaded yet), or undefined. */
function cpuScalar(backend: { tensorMap: { get(id: object): TensorData | undefined } }, t: tf.TensorInfo): number | undefined {
  if (t.dtype !== 'float32' || tf.util.sizeFromShape(t.shape) !== 1) return undefined;
  const d = backend.tensorMap.get(t.dataId);
  if (!d || d.resource || !d.values) return undefined;
  return d.values[0];
}

const originals = new Map<BinaryKind, tf.KernelConfig>();

function makeKernel(kind: BinaryKind, original: tf.KernelConfig): tf.KernelConfig {
  return {
    kernelName: kind,
    backendName: 'webgpu',
    setupFunc: original.setupFunc,
    disposeFunc: original.disposeFunc,
    kernelFunc: (args) => {
      const { inputs, backend } = args;
      const a = inputs.a as tf.TensorInfo;
      const b = inputs.b as tf.TensorInfo;
      const be = backend as unknown as { tensorMap: { get(id: object): TensorData | undefined } };
      if (a.dtype === 'float32' && b.dtype === 'float32') {
        const n = tf.util.sizeFromShape(a.shape);
        if (tf.util.arraysEqual(a.shape, b.shape) && n > 1) {
          const vec4 = n % 4 === 0;
          const items = vec4 ? n / 4 : n;
          return runWgsl(backend, pairKernel(kind, vec4), {
            inputs: [a, b],
            outputs: [{ shape: a.shape, dtype: 'float32' }],
            uniforms: [{ type: 'uint32', data: [items] }],
            workgroups: dispatch1d(items, 256),
            name: `${kind}(peftjs)`,
          })[0];
        }
        const sb = cpuScalar(be, b);
        const sa = sb === undefined ? cpuScalar(be, a) : undefined;
        const x = sb !== undefined ? a : sa !== undefined ? b : undefined;
        const m = x ? tf.util.sizeFromShape(x.shape) : 0;
        // a scalar already on the GPU (e.g. the clipping coefficient): read from its buffer
        const sizeA = tf.util.sizeFromShape(a.shape);
        const sizeB = tf.util.sizeFromShape(b.shape);
        if (!x && (sizeA === 1) !== (sizeB === 1) && a.shape.length <= 4 && b.shape.length <= 4) {
          const [big, small, first] = sizeB === 1 ? [a, b, false] : [b, a, true];
          const nb = tf.util.sizeFromShape(big.shape);
          // the output keeps the larger operand's shape only when broadcasting adds no dimension
          if (small.shape.length <= big.shape.length && nb > 1) {
            const vec4 = nb % 4 === 0;
            const items = vec4 ? nb / 4 : nb;
            return runWgsl(backend, scalarBufferKernel(kind, vec4, first), {
              inputs: [big, small],
              outputs: [{ shape: big.shape, dtype: 'float32' }],
              uniforms: [{ type: 'uint32', data: [items] }],
              workgroups: dispatch1d(items, 256),
              name: `${kind}(peftjs gpu scalar)`,
            })[0];
          }
        }
        if (x && m > 1) {
          const vec4 = m % 4 === 0;
          const items = vec4 ? m / 4 : m;
          return runWgsl(backend, scalarKernel(kind, vec4, sa !== undefined), {
            inputs: [x],
            outputs: [{ shape: x.shape, dtype: 'float32' }],
            uniforms: [{ type: 'uint32', data: [items] }, { type: 'float32', data: [(sb ?? sa)!] }],
            workgroups: dispatch1d(items, 256),
            name: `${kind}(peftjs scalar)`,
          })[0];
        }
      }
      return original.kernelFunc(args) as tf.TensorInfo;
    },
  };
}

/** Replaces tfjs-webgpu's Add and Multiply kernels with the leaner ones (idempotent). */
export function installWebgpuElementwise(): void {
  for (const kind of Object.keys(OPS) as BinaryKind[]) {
    if (originals.has(kind)) continue;
    const original = tf.getKernel(kind, 'webgpu');
    if (!original) continue;
    originals.set(kind, original);
    tf.unregisterKernel(kind, 'webgpu');
    tf.registerKernel(makeKernel(kind, original));
  }
}

/** Puts tfjs-webgpu's own Add and Multiply back. */
export function uninstallWebgpuElementwise(): void {
  for (const [kind, original] of originals) {
    tf.unregisterKernel(kind, 'webgpu');
    tf.registerKernel(original);
  }
  originals.clear();
}
