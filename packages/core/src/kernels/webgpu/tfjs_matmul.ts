import * as tf from '@tensorflow/tfjs';
import { matmulSupports, originalKernels, runMatmul } from './matmul';

/**
 * Optionally runs tfjs's own `BatchMatMul` and `_FusedMatMul` kernels on webgpu through the WGSL matmul
 * (./matmul.ts): every tf.matMul — including those inside tfjs's gradients of other ops — then uses it.
 * Cases it does not cover fall through to tfjs's kernel: non-float32 dtypes, partial batch broadcasting
 * ([2, 1] with [1, 3]), a fused activation other than linear, a bias not of size N, prelu weights.
 *
 * Off by default: `useWgslForTfjsMatMul(true)` turns it on (so does PEFTJS_WGSL_TFJS_MATMUL=1, on the
 * first call of a WGSL matmul fast path), `useWgslForTfjsMatMul(false)` restores tfjs's kernels.
 */

type Info = tf.TensorInfo;
type KernelArgs = { inputs: Record<string, Info | undefined>; attrs: Record<string, unknown>; backend: unknown };

function outShapeOf(a: Info, b: Info, transA: boolean, transB: boolean): number[] {
  const lead = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const M = transA ? a.shape[a.shape.length - 1] : a.shape[a.shape.length - 2];
  const N = transB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  return [...lead, M, N];
}

function batchMatMul(args: KernelArgs): Info {
  const { a, b } = args.inputs as { a: Info; b: Info };
  const transA = !!args.attrs.transposeA;
  const transB = !!args.attrs.transposeB;
  if (!matmulSupports(a, b, transA, transB)) return fallback('BatchMatMul', args);
  return runMatmul(args.backend, { a, b, transA, transB, outShape: outShapeOf(a, b, transA, transB) });
}

function fusedMatMul(args: KernelArgs): Info {
  const { a, b, bias, preluActivationWeights } = args.inputs as { a: Info; b: Info; bias?: Info; preluActivationWeights?: Info };
  const transA = !!args.attrs.transposeA;
  const transB = !!args.attrs.transposeB;
  const activation = args.attrs.activation as string | undefined;
  const N = transB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  const plainBias = !bias || (bias.dtype === 'float32' && tf.util.sizeFromShape(bias.shape) === N && bias.shape[bias.shape.length - 1] === N);
  if ((activation && activation !== 'linear') || preluActivationWeights || !plainBias || !matmulSupports(a, b, transA, transB)) {
    return fallback('_FusedMatMul', args);
  }
  return runMatmul(args.backend, { a, b, transA, transB, bias, outShape: outShapeOf(a, b, transA, transB) });
}

function fallback(name: string, args: KernelArgs): Info {
  const k = originalKernels.get(name)!;
  return k.kernelFunc(args as never) as Info;
}

let active = false;

/** Whether tfjs's BatchMatMul / _FusedMatMul run the WGSL matmul on webgpu. */
export function wgslForTfjsMatMul(): boolean {
  return active;
}

/**
 * Replaces (true) or restores (false) tfjs's webgpu `BatchMatMul` and `_FusedMatMul` kernels. Needs
 * tfjs-backend-webgpu to have registered its kernels (import it, or initBackend, first); returns whether
 * the replacement is in place.
 */
export function useWgslForTfjsMatMul(on: boolean): boolean {
  if (on === active) return active;
  const replacements: Record<string, (args: KernelArgs) => Info> = { BatchMatMul: batchMatMul, _FusedMatMul: fusedMatMul };
  if (on) {
    for (const name of Object.keys(replacements)) if (!originalKernels.has(name) && !tf.getKernel(name, 'webgpu')) return false;
    for (const [name, kernelFunc] of Object.entries(replacements)) {
      if (!originalKernels.has(name)) originalKernels.set(name, tf.getKernel(name, 'webgpu')!);
      tf.unregisterKernel(name, 'webgpu');
      tf.registerKernel({ kernelName: name, backendName: 'webgpu', kernelFunc: kernelFunc as never });
    }
  } else {
    for (const name of Object.keys(replacements)) {
      const original = originalKernels.get(name);
      if (!original) continue;
      tf.unregisterKernel(name, 'webgpu');
      tf.registerKernel(original);
    }
  }
  active = on;
  return active;
}
