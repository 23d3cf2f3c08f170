import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../../errors';
import { registerFastPath, type Op } from '../registry';
import { matmulSupports, originalKernels, runMatmul } from './matmul';
import { useWgslForTfjsMatMul } from './tfjs_matmul';
import { fusedMatMul, matmulGradients, matmulOp, reduceToShape } from './matmul_op';
import { view2d } from '../host';

/**
 * The webgpu fast paths of the linear ops, all on the WGSL matmul (./matmul.ts):
 *
 *  - peftjs.Linear: y = x·Wᵀ + b in one dispatch (W read transposed in place, bias in the epilogue).
 *    Backward: dx = dy·W; dW = dyᵀ·x; db = Σ dy — thunks, so a frozen W costs nothing.
 *  - peftjs.BatchMatMul and peftjs.MatMul: batched products, gradients with transposed layouts.
 *
 * `setBackendFastPaths('webgpu', false, WGSL_MATMUL)` parks them all (the ops then run their tfjs
 * references), and the fast paths of other packages built on this matmul that carry the tag too
 * (@peftjs/lora's LoRA linear).
 */

/** The tag of the WGSL matmul fast paths. */
export const WGSL_MATMUL = 'wgsl-matmul';

type Info = tf.TensorInfo;
const t2 = (x: tf.Tensor): tf.Tensor2D => tf.reshape(x, [-1, x.shape[x.shape.length - 1] as number]) as tf.Tensor2D;

/** The backend's own kernel (partial batch broadcasting, non-float dtypes). */
function tfjsKernel(name: string, backend: unknown, inputs: Record<string, Info>, attrs: Record<string, unknown>): Info {
  const k = originalKernels.get(name) ?? tf.getKernel(name, 'webgpu');
  if (!k) throw new PeftError('BACKEND', `peftjs webgpu fast path: tfjs kernel ${name} is missing on webgpu`);
  return k.kernelFunc({ inputs: inputs as never, backend: backend as never, attrs: attrs as never }) as Info;
}

let registered = false;

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
      return runMatmul(backend, { a: view2d(x), b: weight, transB: true, bias, outShape: [...x.shape.slice(0, -1), weight.shape[0]] });
    },
    gradient: (dy, { x, weight, bias }) => ({
      // dx = dy·W: [rows, out]·[out, in]
      x: () => tf.reshape(fusedMatMul(t2(dy), weight), x.shape),
      // dW = dyᵀ·x: [out, rows]·[rows, in], dy read transposed
      weight: () => fusedMatMul(t2(dy), t2(x), { transA: true }),
      ...(bias ? { bias: () => tf.sum(t2(dy), 0) } : {}),
    }),
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
