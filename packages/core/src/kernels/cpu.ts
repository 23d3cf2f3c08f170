import * as tf from '@tensorflow/tfjs';
import { registerFastPath, type Op } from './registry';
import { disposeInfos, hostBackend, runBackendKernel, view2d } from './host';

/**
 * CPU fast paths (wasm and cpu backends) for the linear layers. tfjs's matMul kernels on wasm run the
 * transposed forms 10–40× below the plain one (x·Wᵀ with W [out, in] is exactly such a product), and
 * tfjs's own matMul gradient uses the transposed forms too. These kernels lay every operand out for the
 * plain kernel: the forward transposes W once (cheap next to the product) and the gradients use only
 * plain products of explicitly transposed operands. They are composed of the backend's own kernels
 * (getKernel(…).kernelFunc), so they run on whatever CPU backend registers BatchMatMul/Transpose.
 */

type Info = tf.TensorInfo;

/** a·b with both operands laid out for the plain kernel. */
function matmul(backend: unknown, a: Info, b: Info): Info {
  return runBackendKernel('BatchMatMul', backend, { a, b }, { transposeA: false, transposeB: false });
}

function transpose2d(backend: unknown, x: Info): Info {
  return runBackendKernel('Transpose', backend, { x }, { perm: [1, 0] });
}

/** x·Wᵀ (+ b) via transpose(W) and a plain product. */
function linearForward(backend: unknown, x: Info, weight: Info, bias?: Info): Info {
  const x2 = view2d(x);
  const wT = transpose2d(backend, weight);
  let y = matmul(backend, x2, wT);
  disposeInfos(backend, wT);
  if (bias) {
    const yb = runBackendKernel('Add', backend, { a: y, b: bias });
    disposeInfos(backend, y);
    y = yb;
  }
  return { dataId: y.dataId, shape: [...x.shape.slice(0, -1), weight.shape[0]], dtype: 'float32' };
}

/** One plain 2-D product per batch entry, concatenated. */
function batchedPlain(backend: unknown, a: Info, b: Info): Info {
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2 || ra !== rb) throw new Error(`peftjs.BatchMatMul: operands of rank ${ra} and ${rb}; both must be of one rank ≥ 2`);
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) throw new Error(`peftjs.BatchMatMul: inner sizes ${k} and ${k2} differ ([${a.shape}]·[${b.shape}])`);
  const lead = a.shape.slice(0, -2).map((d, i) => {
    const e = b.shape[i];
    if (d !== e && d !== 1 && e !== 1) throw new Error(`peftjs.BatchMatMul: batch dims [${a.shape.slice(0, -2)}] and [${b.shape.slice(0, -2)}] do not broadcast`);
    return Math.max(d, e);
  });
  const batch = tf.util.sizeFromShape(lead);
  const ba = tf.util.sizeFromShape(a.shape.slice(0, -2));
  const bb = tf.util.sizeFromShape(b.shape.slice(0, -2));
  if (batch !== Math.max(ba, bb) || (ba !== batch && ba !== 1) || (bb !== batch && bb !== 1)) {
    // partial broadcasting ([2, 1] with [1, 3]): the backend's own batched kernel
    return runBackendKernel('BatchMatMul', backend, { a, b }, { transposeA: false, transposeB: false });
  }
  const outShape = [...lead, m, n];
  if (batch === 1) {
    const c = matmul(backend, { dataId: a.dataId, shape: [m, k], dtype: a.dtype }, { dataId: b.dataId, shape: [k, n], dtype: b.dtype });
    return { dataId: c.dataId, shape: outShape, dtype: 'float32' };
  }
  const a3: Info = { dataId: a.dataId, shape: [ba, m, k], dtype: a.dtype };
  const b3: Info = { dataId: b.dataId, shape: [bb, k, n], dtype: b.dtype };
  // the backends' Slice kernel is slow on these shapes (≈ 2 ms for 64 KB on wasm): copy the batch
  // entries out in JS instead (readSync: one copy of the operand; write: one copy per entry)
  const be = hostBackend(backend, 'peftjs.BatchMatMul');
  const values = new Map<Info, Float32Array>();
  const slice = (x: Info, i: number, r: number, c: number): Info => {
    let v = values.get(x);
    if (!v) values.set(x, (v = be.readSync(x.dataId) as Float32Array));
    const dataId = be.write(v.slice(i * r * c, (i + 1) * r * c), [r, c], 'float32');
    return { dataId, shape: [r, c], dtype: 'float32' };
  };
  const a0 = ba === 1 ? slice(a3, 0, m, k) : undefined;
  const b0 = bb === 1 ? slice(b3, 0, k, n) : undefined;
  const parts: Info[] = [];
  for (let i = 0; i < batch; i++) {
    const ai = a0 ?? slice(a3, i, m, k);
    const bi = b0 ?? slice(b3, i, k, n);
    parts.push(matmul(backend, ai, bi));
    if (!a0) disposeInfos(backend, ai);
    if (!b0) disposeInfos(backend, bi);
  }
  if (a0) disposeInfos(backend, a0);
  if (b0) disposeInfos(backend, b0);
  const c = runBackendKernel('Concat', backend, parts as unknown as Record<string, Info>, { axis: 0 });
  disposeInfos(backend, ...parts);
  return { dataId: c.dataId, shape: outShape, dtype: 'float32' };
}

const t2 = (x: tf.Tensor): tf.Tensor2D => x.reshape([-1, x.shape[x.shape.length - 1] as number]) as tf.Tensor2D;

/**
 * The tag of these fast paths: `setBackendFastPaths('wasm', false, MATMUL_LAYOUT)` parks them. Fast paths of
 * other packages that exist for the same reason carry it too (@peftjs/lora's LoRA linear).
 */
export const MATMUL_LAYOUT = 'matmul-layout';

/** Registers the wasm and cpu fast paths of peftjs.Linear and peftjs.BatchMatMul. */
export function registerCpuFastPaths(
  linearOp: Op<{ x: tf.Tensor; weight: tf.Tensor; bias?: tf.Tensor }, Record<string, never>>,
  batchMatMulOp: Op<{ a: tf.Tensor; b: tf.Tensor }, Record<string, never>>,
): void {
  for (const backendName of ['wasm', 'cpu']) {
    registerFastPath(batchMatMulOp, {
      backendName,
      tags: [MATMUL_LAYOUT],
      kernelFunc: ({ inputs, backend }) => batchedPlain(backend, inputs.a, inputs.b),
      gradient: (dy, { a, b }) => {
        const swap = (t: tf.Tensor) => {
          const perm = t.shape.map((_, i) => i);
          const n = perm.length;
          [perm[n - 2], perm[n - 1]] = [perm[n - 1], perm[n - 2]];
          return tf.transpose(t, perm);
        };
        // a broadcast over the batch (leading size 1) gets its gradient summed over it
        const reduceTo = (g: tf.Tensor, like: tf.Tensor) => {
          if (tf.util.arraysEqual(g.shape, like.shape)) return g;
          const axes = like.shape.slice(0, -2).map((d, i) => (d === 1 && g.shape[i] !== 1 ? i : -1)).filter((i) => i >= 0);
          return tf.sum(g, axes, true).reshape(like.shape);
        };
        return {
          a: () => reduceTo(batchMatMulOp({ a: dy, b: swap(b) }, {}), a),
          b: () => reduceTo(batchMatMulOp({ a: swap(a), b: dy }, {}), b),
        };
      },
    });

    registerFastPath(linearOp, {
      backendName,
      tags: [MATMUL_LAYOUT],
      kernelFunc: ({ inputs, backend }) => linearForward(backend, inputs.x, inputs.weight, inputs.bias),
      gradient: (dy, { x, weight, bias }) => {
        const dy2 = () => t2(dy);
        return {
          // dx = dy·W ([N, out]·[out, in]: plain)
          x: () => tf.matMul(dy2(), weight as tf.Tensor2D).reshape(x.shape),
          // dW = dyᵀ·x, computed as an explicit transpose then a plain product
          weight: () => tf.matMul(tf.transpose(dy2()), t2(x)),
          ...(bias ? { bias: () => tf.sum(dy2(), 0) } : {}),
        };
      },
    });
  }
}

