import * as tf from '@tensorflow/tfjs';
import { registerFastPath, type Op } from './registry';

/**
 * CPU fast paths (wasm and cpu backends) for the linear layers. tfjs's matMul kernels on wasm run the
 * transposed forms 10–40× below the plain one (x·Wᵀ with W [out, in] is exactly such a product), and
 * tfjs's own matMul gradient uses the transposed forms too. These kernels lay every operand out for the
 * plain kernel: the forward transposes W once (cheap next to the product) and the gradients use only
 * plain products of explicitly transposed operands. They are composed of the backend's own kernels
 * (getKernel(…).kernelFunc), so they run on whatever CPU backend registers BatchMatMul/Transpose.
 */

type Info = tf.TensorInfo;
interface Backend {
  disposeData(dataId: unknown, force?: boolean): unknown;
  write(values: Float32Array, shape: number[], dtype: string): unknown;
}

function run(name: string, backend: unknown, inputs: Record<string, Info>, attrs: Record<string, unknown> = {}): Info {
  const k = tf.getKernel(name, tf.getBackend());
  if (!k) throw new Error(`peftjs fast path: kernel ${name} is missing on backend ${tf.getBackend()}`);
  return k.kernelFunc({ inputs: inputs as never, backend: backend as never, attrs: attrs as never }) as Info;
}

function free(backend: unknown, ...infos: Info[]): void {
  for (const i of infos) (backend as Backend).disposeData(i.dataId);
}

/** A view of `t` as [rows, last] (same data; kernels only read the shape). */
function as2d(t: Info): Info {
  const last = t.shape[t.shape.length - 1];
  return { dataId: t.dataId, shape: [tf.util.sizeFromShape(t.shape) / last, last], dtype: t.dtype };
}

/** a·b with both operands laid out for the plain kernel. */
function matmul(backend: unknown, a: Info, b: Info): Info {
  return run('BatchMatMul', backend, { a, b }, { transposeA: false, transposeB: false });
}

function transpose2d(backend: unknown, x: Info): Info {
  return run('Transpose', backend, { x }, { perm: [1, 0] });
}

function scalar(backend: unknown, v: number): Info {
  const dataId = (backend as Backend).write(new Float32Array([v]), [], 'float32');
  return { dataId: dataId as Info['dataId'], shape: [], dtype: 'float32' };
}

/** x·Wᵀ (+ b) via transpose(W) and a plain product. */
function linearForward(backend: unknown, x: Info, weight: Info, bias?: Info): Info {
  const x2 = as2d(x);
  const wT = transpose2d(backend, weight);
  let y = matmul(backend, x2, wT);
  free(backend, wT);
  if (bias) {
    const yb = run('Add', backend, { a: y, b: bias });
    free(backend, y);
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
    return run('BatchMatMul', backend, { a, b }, { transposeA: false, transposeB: false });
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
  const be = backend as Backend & { readSync(dataId: unknown): Float32Array };
  const values = new Map<Info, Float32Array>();
  const slice = (x: Info, i: number, r: number, c: number): Info => {
    let v = values.get(x);
    if (!v) values.set(x, (v = be.readSync(x.dataId)));
    const dataId = be.write(v.slice(i * r * c, (i + 1) * r * c), [r, c], 'float32');
    return { dataId: dataId as Info['dataId'], shape: [r, c], dtype: 'float32' };
  };
  const a0 = ba === 1 ? slice(a3, 0, m, k) : undefined;
  const b0 = bb === 1 ? slice(b3, 0, k, n) : undefined;
  const parts: Info[] = [];
  for (let i = 0; i < batch; i++) {
    const ai = a0 ?? slice(a3, i, m, k);
    const bi = b0 ?? slice(b3, i, k, n);
    parts.push(matmul(backend, ai, bi));
    if (!a0) free(backend, ai);
    if (!b0) free(backend, bi);
  }
  if (a0) free(backend, a0);
  if (b0) free(backend, b0);
  const c = run('Concat', backend, parts as unknown as Record<string, Info>, { axis: 0 });
  free(backend, ...parts);
  return { dataId: c.dataId, shape: outShape, dtype: 'float32' };
}

const t2 = (x: tf.Tensor): tf.Tensor2D => x.reshape([-1, x.shape[x.shape.length - 1] as number]) as tf.Tensor2D;

/** Registers the wasm and cpu fast paths of peftjs.Linear and peftjs.LoraLinear. */
/** The tag of these fast paths: `setBackendFastPaths('wasm', false, MATMUL_LAYOUT)` parks them. */
export const MATMUL_LAYOUT = 'matmul-layout';

export function registerCpuFastPaths(
  linearOp: Op<{ x: tf.Tensor; weight: tf.Tensor; bias?: tf.Tensor }, Record<string, never>>,
  loraLinearOp: Op<{ base: tf.Tensor; x: tf.Tensor; loraA: tf.Tensor; loraB: tf.Tensor }, { scaling: number }>,
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

    registerFastPath(loraLinearOp, {
      backendName,
      tags: [MATMUL_LAYOUT],
      kernelFunc: ({ inputs, attrs, backend }) => {
        const { base, x, loraA, loraB } = inputs;
        const x2 = as2d(x);
        const aT = transpose2d(backend, loraA);
        const u = matmul(backend, x2, aT); // [N, r]
        free(backend, aT);
        let bT = transpose2d(backend, loraB); // [r, out]
        if (attrs.scaling !== 1) {
          const s = scalar(backend, attrs.scaling);
          const scaled = run('Multiply', backend, { a: bT, b: s });
          free(backend, bT, s);
          bT = scaled;
        }
        const d = matmul(backend, u, bT); // [N, out]
        free(backend, u, bT);
        const out = run('Add', backend, { a: { dataId: base.dataId, shape: d.shape, dtype: base.dtype }, b: d });
        free(backend, d);
        return { dataId: out.dataId, shape: base.shape, dtype: 'float32' };
      },
      gradient: (dy, { x, loraA, loraB }, { scaling }) => {
        const s = scaling;
        // dy·B [N, r], for dx and dA (recomputed in each: the engine's tidy around a thunk would dispose
        // a cached tensor, and r is small)
        const getDyB = () => tf.matMul(t2(dy), loraB as tf.Tensor2D);
        return {
          base: () => tf.clone(dy),
          x: () => tf.mul(tf.matMul(getDyB(), loraA as tf.Tensor2D), s).reshape(x.shape),
          // dA = s·(dy·B)ᵀ·x: [r, N]·[N, in]
          loraA: () => tf.mul(tf.matMul(tf.transpose(getDyB()), t2(x)), s),
          // dB = s·dyᵀ·u = s·(uᵀ·dy)ᵀ, u = x·Aᵀ: the transposes are of [N, r] and [r, out]
          loraB: () => {
            const u = tf.matMul(t2(x), tf.transpose(loraA as tf.Tensor2D));
            return tf.mul(tf.transpose(tf.matMul(tf.transpose(u), t2(dy))), s);
          },
        };
      },
    });
  }
}

