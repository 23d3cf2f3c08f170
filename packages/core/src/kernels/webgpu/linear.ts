import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../../errors';
import { registerFastPath, type Op } from '../registry';
import { matmulSupports, originalKernels, runMatmul } from './matmul';
import { useWgslForTfjsMatMul } from './tfjs_matmul';
import { LORA_GRAD_COLS, LORA_GRAD_MAX_RANK, loraFusedSupports, loraRowsPerWorkgroup, runLoraFused, runLoraGradAB, runLoraSkinnyPair } from './lowrank';
import { fusedMatMul, matmulGradients, matmulOp, reduceToShape } from './matmul_op';

/**
 * The webgpu fast paths of the linear ops, all on the WGSL matmul (./matmul.ts):
 *
 *  - peftjs.Linear: y = x·Wᵀ + b in one dispatch (W read transposed in place, bias in the epilogue).
 *    Backward: dx = dy·W; dW = dyᵀ·x; db = Σ dy — thunks, so a frozen W costs nothing.
 *  - peftjs.LoraLinear: base + s·(x·Aᵀ)·Bᵀ in one dispatch (./lowrank.ts; r ≤ 256), else xa = x·Aᵀ
 *    [rows, r], then out = base + s·xa·Bᵀ with base in the matmul's epilogue. Backward: [xa, dy·B] in
 *    one dispatch, dx = s·(dy·B)·A in another, [dA = s·(dy·B)ᵀ·x, dB = s·dyᵀ·xa] in a third (r ≤ 16);
 *    the base's gradient is dy (a reshape, no copy).
 *  - peftjs.BatchMatMul and peftjs.MatMul: batched products, gradients with transposed layouts.
 *
 * `setBackendFastPaths('webgpu', false, WGSL_MATMUL)` parks them all (the ops then run their tfjs
 * references).
 */

/** The tag of the WGSL matmul fast paths. */
export const WGSL_MATMUL = 'wgsl-matmul';

type Info = tf.TensorInfo;
const as2d = (t: Info): Info => {
  const last = t.shape[t.shape.length - 1];
  return { dataId: t.dataId, shape: [tf.util.sizeFromShape(t.shape) / last, last], dtype: t.dtype };
};
const t2 = (x: tf.Tensor): tf.Tensor2D => tf.reshape(x, [-1, x.shape[x.shape.length - 1] as number]) as tf.Tensor2D;

/** The backend's own kernel (partial batch broadcasting, non-float dtypes). */
function tfjsKernel(name: string, backend: unknown, inputs: Record<string, Info>, attrs: Record<string, unknown>): Info {
  const k = originalKernels.get(name) ?? tf.getKernel(name, 'webgpu');
  if (!k) throw new PeftError('BACKEND', `peftjs webgpu fast path: tfjs kernel ${name} is missing on webgpu`);
  return k.kernelFunc({ inputs: inputs as never, backend: backend as never, attrs: attrs as never }) as Info;
}

let registered = false;

const SKINNY_PAIR = 'peftjs.LoraSkinnyPair';
/** [x·Aᵀ, dy·B] in one dispatch (an engine kernel with two outputs), or undefined where it does not apply. */
function skinnyPair(x2: tf.Tensor, loraA: tf.Tensor, dy2: tf.Tensor, loraB: tf.Tensor): tf.Tensor[] | undefined {
  if (tf.getBackend() !== 'webgpu') return undefined;
  const maxShared = (tf.backend() as unknown as { device: GPUDevice }).device.limits.maxComputeWorkgroupStorageSize;
  const R = loraA.shape[0];
  const rows = x2.shape[0];
  if (!loraFusedSupports(x2, loraA, loraB, maxShared) || dy2.dtype !== 'float32' || loraB.shape[1] !== R || dy2.shape[0] !== rows) return undefined;
  if (loraA.shape[1] !== x2.shape[1] || loraB.shape[0] !== dy2.shape[1]) return undefined;
  if (!tf.getKernel(SKINNY_PAIR, 'webgpu')) {
    tf.registerKernel({
      kernelName: SKINNY_PAIR,
      backendName: 'webgpu',
      kernelFunc: ({ inputs, backend }) => {
        const { x, loraA: a, dy, loraB: b } = inputs as Record<string, tf.TensorInfo>;
        const limit = (backend as { device: GPUDevice }).device.limits.maxComputeWorkgroupStorageSize;
        const out = runLoraSkinnyPair(backend, x, a, dy, b, limit);
        if (!out) throw new PeftError('UNSUPPORTED', `${SKINNY_PAIR}: unsupported shapes x [${x.shape}], A [${a.shape}], dy [${dy.shape}], B [${b.shape}]`);
        return out;
      },
    });
  }
  if (Math.ceil(rows / loraRowsPerWorkgroup(R)) > 65535 || rows === 0) return undefined;
  return tf.engine().runKernel(SKINNY_PAIR, { x: x2, loraA, dy: dy2, loraB } as tf.NamedTensorMap, {}) as unknown as tf.Tensor[];
}

const GRAD_AB = 'peftjs.LoraGradAB';
/** [s·dyBᵀ·x, s·dyᵀ·xa] in one dispatch (an engine kernel with two outputs), or undefined where it does not apply. */
function gradAB(x2: tf.Tensor, dyB: tf.Tensor, dy2: tf.Tensor, xa: tf.Tensor, scaling: number): tf.Tensor[] | undefined {
  const R = dyB.shape[1] as number;
  const K1 = x2.shape[1] as number;
  const K2 = dy2.shape[1] as number;
  if (tf.getBackend() !== 'webgpu' || R > LORA_GRAD_MAX_RANK || K1 === 0 || K2 === 0) return undefined;
  if (Math.ceil(K1 / LORA_GRAD_COLS) + Math.ceil(K2 / LORA_GRAD_COLS) > 65535) return undefined;
  if (!tf.getKernel(GRAD_AB, 'webgpu')) {
    tf.registerKernel({
      kernelName: GRAD_AB,
      backendName: 'webgpu',
      kernelFunc: ({ inputs, attrs, backend }) => {
        const { x, dyB: p, dy, xa: q } = inputs as Record<string, tf.TensorInfo>;
        const out = runLoraGradAB(backend, { x, dyB: p, dy, xa: q, scaling: (attrs as { scaling: number }).scaling });
        if (!out) throw new PeftError('UNSUPPORTED', `${GRAD_AB}: unsupported shapes x [${x.shape}], dy·B [${p.shape}], dy [${dy.shape}], xa [${q.shape}]`);
        return out;
      },
    });
  }
  return tf.engine().runKernel(GRAD_AB, { x: x2, dyB, dy: dy2, xa } as tf.NamedTensorMap, { scaling } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor[];
}

let fusedLora = true;
/**
 * LoRA's forward as one dispatch (./lowrank.ts, default) or as two WGSL products (xa = x·Aᵀ, then
 * base + s·xa·Bᵀ in the matmul's epilogue); a switch for benchmarks and debugging.
 */
export function setFusedLoraForward(on: boolean): void {
  fusedLora = on;
}

/** PEFTJS_WGSL_TFJS_MATMUL=1: replace tfjs's webgpu matMul kernels too, on the first fast-path call. */
let envChecked = false;
function checkEnv(): void {
  if (envChecked) return;
  envChecked = true;
  const env = typeof process !== 'undefined' ? process.env?.PEFTJS_WGSL_TFJS_MATMUL : undefined;
  if (env === '1') useWgslForTfjsMatMul(true);
}

export function registerWebgpuFastPaths(
  linearOp: Op<{ x: tf.Tensor; weight: tf.Tensor; bias?: tf.Tensor }, Record<string, never>>,
  loraLinearOp: Op<{ base: tf.Tensor; x: tf.Tensor; loraA: tf.Tensor; loraB: tf.Tensor }, { scaling: number }>,
  batchMatMulOp: Op<{ a: tf.Tensor; b: tf.Tensor }, Record<string, never>>,
): void {
  if (registered) return;
  registered = true;
  const backendName = 'webgpu';
  const tags = [WGSL_MATMUL];

  registerFastPath(matmulOp, {
    backendName,
    tags,
    kernelFunc: ({ inputs, attrs, backend }) => {
      checkEnv();
      const { a, b, bias, c } = inputs;
      // partial batch broadcasting ([2, 1] with [1, 3]) throws a PeftError here; fusedMatMul routes it to the reference
      return runMatmul(backend, { a, b, bias, c, transA: attrs.transA, transB: attrs.transB, alpha: attrs.alpha, beta: attrs.beta });
    },
    gradient: (dy, { a, b, bias, c }, { transA, transB, alpha, beta }) => {
      const g = matmulGradients(dy, a, b, transA, transB, alpha);
      return {
        a: g.a,
        b: g.b,
        ...(bias ? { bias: () => reduceToShape(t2(dy).sum(0), bias.shape) } : {}),
        ...(c ? { c: () => reduceToShape(beta === 1 ? tf.reshape(dy, dy.shape) : tf.mul(dy, beta), c.shape) } : {}),
      };
    },
  });

  registerFastPath(linearOp, {
    backendName,
    tags,
    kernelFunc: ({ inputs, backend }) => {
      checkEnv();
      const { x, weight, bias } = inputs;
      return runMatmul(backend, { a: as2d(x), b: weight, transB: true, bias, outShape: [...x.shape.slice(0, -1), weight.shape[0]] });
    },
    gradient: (dy, { x, weight, bias }) => ({
      // dx = dy·W: [rows, out]·[out, in]
      x: () => tf.reshape(fusedMatMul(t2(dy), weight), x.shape),
      // dW = dyᵀ·x: [out, rows]·[rows, in], dy read transposed
      weight: () => fusedMatMul(t2(dy), t2(x), { transA: true }),
      ...(bias ? { bias: () => tf.sum(t2(dy), 0) } : {}),
    }),
  });

  registerFastPath(loraLinearOp, {
    backendName,
    tags,
    kernelFunc: ({ inputs, attrs, backend }) => {
      checkEnv();
      const { base, x, loraA, loraB } = inputs;
      const maxShared = (backend as { device: GPUDevice }).device.limits.maxComputeWorkgroupStorageSize;
      if (fusedLora && loraFusedSupports(x, loraA, loraB, maxShared)) return runLoraFused(backend, { base, x, loraA, loraB, scaling: attrs.scaling });
      const xa = runMatmul(backend, { a: as2d(x), b: loraA, transB: true }); // [rows, r]
      const out = runMatmul(backend, { a: xa, b: loraB, transB: true, c: base, alpha: attrs.scaling, beta: 1, outShape: base.shape });
      (backend as { disposeData(id: unknown): void }).disposeData(xa.dataId);
      return out;
    },
    gradient: (dy, { x, loraA, loraB }, { scaling: s }) => {
      // dy·B [rows, r], shared by dx and dA: computed here, in the backward pass's scope (freed with
      // it), not in a thunk (the engine's tidy around each thunk would free it after the first). One
      // dispatch fewer a layer; r columns, so it is small.
      const x2 = t2(x);
      const dy2 = t2(dy);
      // x·Aᵀ (for dB) and dy·B (for dx and dA) as one dispatch where it applies
      const pair = fusedLora ? skinnyPair(x2, loraA, dy2, loraB) : undefined;
      const dyB = pair ? pair[1] : fusedMatMul(dy2, loraB);
      // dA and dB as one dispatch too (both are trained in LoRA; one unasked for is freed with the pass)
      const ab = pair ? gradAB(x2, dyB, dy2, pair[0], s) : undefined;
      return {
        // a reshape shares dy's buffer (as tfjs's own Add gradient does): no copy dispatch
        base: () => tf.reshape(dy, dy.shape),
        x: () => tf.reshape(fusedMatMul(dyB, loraA, { alpha: s }), x.shape),
        // dA = s·(dy·B)ᵀ·x: [r, rows]·[rows, in]
        loraA: () => (ab ? ab[0] : fusedMatMul(dyB, x2, { transA: true, alpha: s })),
        // dB = s·dyᵀ·xa: [out, rows]·[rows, r], xa = x·Aᵀ
        loraB: () => (ab ? ab[1] : fusedMatMul(dy2, pair ? pair[0] : fusedMatMul(x2, loraA, { transB: true }), { transA: true, alpha: s })),
      };
    },
  });

  registerFastPath(batchMatMulOp, {
    backendName,
    tags,
    kernelFunc: ({ inputs, backend }) => {
      checkEnv();
      const { a, b } = inputs;
      if (!matmulSupports(a, b)) return tfjsKernel('BatchMatMul', backend, { a, b }, { transposeA: false, transposeB: false });
      return runMatmul(backend, { a, b });
    },
    gradient: (dy, { a, b }) => matmulGradients(dy, a, b, false, false, 1),
  });
}
