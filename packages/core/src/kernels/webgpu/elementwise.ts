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

/**
 * The second operand: another tensor of the same shape (`pair`), a CPU scalar passed as a uniform
 * (`uniform`), or a one-element tensor already on the GPU (`buffer`); `scalarFirst` keeps the operand
 * order of the call (a + b is not b + a for NaN payloads; keep it exact).
 */
type Operand = 'pair' | 'uniform' | 'buffer';

function ewKernel(kind: BinaryKind, vec4: boolean, operand: Operand, scalarFirst: boolean) {
  const t = vec4 ? 'vec4<f32>' : 'f32';
  const other = operand === 'pair' ? 'b[i]' : operand === 'uniform' ? `${t}(u.s)` : `${t}(s[0])`;
  const expr = scalarFirst ? `${other} ${OPS[kind]} a[i]` : `a[i] ${OPS[kind]} ${other}`;
  const extra = operand === 'pair' ? `@group(0) @binding(2) var<storage, read> b: array<${t}>;` : operand === 'buffer' ? '@group(0) @binding(2) var<storage, read> s: array<f32>;' : '';
  const uAt = operand === 'uniform' ? 2 : 3;
  return {
    key: `peftjs-ew-${kind}-${operand}${scalarFirst ? 'L' : 'R'}-${vec4 ? 'v4' : 's'}`,
    code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> y: array<${t}>;
@group(0) @binding(1) var<storage, read> a: array<${t}>;
${extra}
struct U { n: u32${operand === 'uniform' ? ', s: f32' : ''} }
@group(0) @binding(${uAt}) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + li;
  if (i < u.n) { y[i] = ${expr}; }
}`,
  };
}

/** One dispatch of `ewKernel` over `x` (the operand whose shape the output takes). */
function runEw(backend: unknown, kind: BinaryKind, operand: Operand, scalarFirst: boolean, x: tf.TensorInfo, other?: tf.TensorInfo, scalar?: number): tf.TensorInfo {
  const n = tf.util.sizeFromShape(x.shape);
  const vec4 = n % 4 === 0;
  const items = vec4 ? n / 4 : n;
  return runWgsl(backend, ewKernel(kind, vec4, operand, scalarFirst), {
    inputs: other ? [x, other] : [x],
    outputs: [{ shape: x.shape, dtype: 'float32' }],
    uniforms: [{ type: 'uint32', data: [items] }, ...(scalar !== undefined ? [{ type: 'float32' as const, data: [scalar] }] : [])],
    workgroups: dispatch1d(items, 256),
    name: `${kind}(peftjs${operand === 'pair' ? '' : operand === 'uniform' ? ' scalar' : ' gpu scalar'})`,
  })[0];
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
        const sizeA = tf.util.sizeFromShape(a.shape);
        const sizeB = tf.util.sizeFromShape(b.shape);
        if (tf.util.arraysEqual(a.shape, b.shape) && sizeA > 1) return runEw(backend, kind, 'pair', false, a, b);
        // one side a scalar; the output keeps the other's shape only when broadcasting adds no dimension
        if ((sizeA === 1) !== (sizeB === 1)) {
          const [x, s, first] = sizeB === 1 ? [a, b, false] : [b, a, true];
          if (s.shape.length <= x.shape.length && x.shape.length <= 4) {
            const value = cpuScalar(be, s);
            return value !== undefined ? runEw(backend, kind, 'uniform', first, x, undefined, value) : runEw(backend, kind, 'buffer', first, x, s);
          }
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
