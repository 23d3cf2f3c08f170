import * as tf from '@tensorflow/tfjs';
import {
  MATMUL_LAYOUT,
  PeftError,
  WGSL_MATMUL,
  defineOp,
  disposeInfos,
  fusedMatMul,
  linear2d,
  registerFastPath,
  runBackendKernel,
  view2d,
  wgslMatmul,
  writeScalar,
} from '@peftjs/core';
import { LORA_GRAD_COLS, LORA_GRAD_MAX_RANK, loraFusedSupports, loraRowsPerWorkgroup, runLoraFused, runLoraGradAB, runLoraSkinnyPair } from './wgsl';

/**
 * The LoRA linear op, `peftjs.LoraLinear`: its reference, and its fast paths with their gradients,
 * registered through core's kernel registry (public exports only, as a third-party method would) when
 * this module is imported — importing @peftjs/lora does it.
 *
 *  - reference: base + s·(x·Aᵀ)·Bᵀ in tfjs ops (differentiable; every other backend).
 *  - wasm / cpu: tfjs's matMul kernels there run the transposed forms 10–40× below the plain one, so the
 *    fast path transposes A and B explicitly and uses plain products only, forward and backward. It
 *    carries core's MATMUL_LAYOUT tag: parked with core's own layout fast paths once a native matmul
 *    handles transposed operands itself.
 *  - webgpu: base + s·(x·Aᵀ)·Bᵀ in one dispatch (./wgsl.ts; r ≤ 256), else xa = x·Aᵀ [rows, r], then
 *    out = base + s·xa·Bᵀ with base in core's WGSL matmul's epilogue. Backward: [xa, dy·B] in one
 *    dispatch, dx = s·(dy·B)·A in another, [dA = s·(dy·B)ᵀ·x, dB = s·dyᵀ·xa] in a third (r ≤ 16); the
 *    base's gradient is dy (a reshape, no copy). It carries core's WGSL_MATMUL tag.
 */
export type LoraLinearInputs = { base: tf.Tensor; x: tf.Tensor; loraA: tf.Tensor; loraB: tf.Tensor };
export type LoraLinearAttrs = { scaling: number };

/**
 * LoRA's update added to a base layer's output: base + scaling · (x·Aᵀ)·Bᵀ, A [r, in], B [out, r].
 * `x` is the (dropped-out) input of the LoRA path.
 */
export const loraLinearOp = defineOp<LoraLinearInputs, LoraLinearAttrs>({
  name: 'peftjs.LoraLinear',
  inputNames: ['base', 'x', 'loraA', 'loraB'],
  reference: ({ base, x, loraA, loraB }, { scaling }) => {
    const delta = linear2d(x, (x2) => tf.matMul(tf.matMul(x2, loraA as tf.Tensor2D, false, true), loraB as tf.Tensor2D, false, true));
    return tf.add(base, scaling === 1 ? delta : tf.mul(delta, scaling));
  },
  describe: 'base [..., out], x [..., in], loraA [r, in], loraB [out, r]',
});

type Info = tf.TensorInfo;
const t2 = (x: tf.Tensor): tf.Tensor2D => tf.reshape(x, [-1, x.shape[x.shape.length - 1] as number]) as tf.Tensor2D;

// ---------------------------------------------------------------------------------------------------
// wasm and cpu: plain-layout products composed of the backend's own kernels

const plainMatmul = (backend: unknown, a: Info, b: Info): Info => runBackendKernel('BatchMatMul', backend, { a, b }, { transposeA: false, transposeB: false });
const transpose2d = (backend: unknown, x: Info): Info => runBackendKernel('Transpose', backend, { x }, { perm: [1, 0] });

for (const backendName of ['wasm', 'cpu']) {
  registerFastPath(loraLinearOp, {
    backendName,
    tags: [MATMUL_LAYOUT],
    kernelFunc: ({ inputs, attrs, backend }) => {
      const { base, x, loraA, loraB } = inputs as unknown as Record<keyof LoraLinearInputs, Info>;
      const aT = transpose2d(backend, loraA);
      const u = plainMatmul(backend, view2d(x), aT); // [N, r]
      disposeInfos(backend, aT);
      let bT = transpose2d(backend, loraB); // [r, out]
      if (attrs.scaling !== 1) {
        const s = writeScalar(backend, attrs.scaling);
        const scaled = runBackendKernel('Multiply', backend, { a: bT, b: s });
        disposeInfos(backend, bT, s);
        bT = scaled;
      }
      const d = plainMatmul(backend, u, bT); // [N, out]
      disposeInfos(backend, u, bT);
      const out = runBackendKernel('Add', backend, { a: { dataId: base.dataId, shape: d.shape, dtype: base.dtype }, b: d });
      disposeInfos(backend, d);
      return { dataId: out.dataId, shape: base.shape, dtype: 'float32' };
    },
    gradient: (dy, { x, loraA, loraB }, { scaling: s }) => {
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

// ---------------------------------------------------------------------------------------------------
// webgpu: LoRA's WGSL programs (./wgsl.ts) and core's WGSL matmul

const maxSharedOf = (backend: unknown): number => (backend as { device: GPUDevice }).device.limits.maxComputeWorkgroupStorageSize;

const SKINNY_PAIR = 'peftjs.LoraSkinnyPair';
/** [x·Aᵀ, dy·B] in one dispatch (an engine kernel with two outputs), or undefined where it does not apply. */
function skinnyPair(x2: tf.Tensor, loraA: tf.Tensor, dy2: tf.Tensor, loraB: tf.Tensor): tf.Tensor[] | undefined {
  if (tf.getBackend() !== 'webgpu') return undefined;
  const maxShared = maxSharedOf(tf.backend());
  const R = loraA.shape[0];
  const rows = x2.shape[0];
  if (!loraFusedSupports(x2, loraA, loraB, maxShared) || dy2.dtype !== 'float32' || loraB.shape[1] !== R || dy2.shape[0] !== rows) return undefined;
  if (loraA.shape[1] !== x2.shape[1] || loraB.shape[0] !== dy2.shape[1]) return undefined;
  if (!tf.getKernel(SKINNY_PAIR, 'webgpu')) {
    tf.registerKernel({
      kernelName: SKINNY_PAIR,
      backendName: 'webgpu',
      kernelFunc: ({ inputs, backend }) => {
        const { x, loraA: a, dy, loraB: b } = inputs as Record<string, Info>;
        const out = runLoraSkinnyPair(backend, x, a, dy, b, maxSharedOf(backend));
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
        const { x, dyB: p, dy, xa: q } = inputs as Record<string, Info>;
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
 * LoRA's forward as one dispatch (./wgsl.ts, default) or as two WGSL products (xa = x·Aᵀ, then
 * base + s·xa·Bᵀ in the matmul's epilogue); a switch for benchmarks and debugging.
 */
export function setFusedLoraForward(on: boolean): void {
  fusedLora = on;
}

registerFastPath(loraLinearOp, {
  backendName: 'webgpu',
  tags: [WGSL_MATMUL],
  kernelFunc: ({ inputs, attrs, backend }) => {
    const { base, x, loraA, loraB } = inputs as unknown as Record<keyof LoraLinearInputs, Info>;
    if (fusedLora && loraFusedSupports(x, loraA, loraB, maxSharedOf(backend))) return runLoraFused(backend, { base, x, loraA, loraB, scaling: attrs.scaling });
    const xa = wgslMatmul(backend, { a: view2d(x), b: loraA, transB: true }); // [rows, r]
    const out = wgslMatmul(backend, { a: xa, b: loraB, transB: true, c: base, alpha: attrs.scaling, beta: 1, outShape: base.shape });
    disposeInfos(backend, xa);
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
