import * as tf from '@tensorflow/tfjs';
import { PeftError, dispatch1d, registerFastPath, runWgsl, wgslMatmul, type WgslKernel } from '@peftjs/core';
import { codeTable, type QuantType } from './bnb';
import { dequant4bitMatMulOp, type Dequant4bitAttrs, type Dequant4bitInputs } from './op';

/**
 * The webgpu fast path of `peftjs.Dequant4bitMatMul`: a tiled matmul (16×16 outputs a workgroup, the
 * reduction in steps of 16, as core's WGSL matmul stages operands in workgroup memory) whose weight
 * tile is dequantised while it is staged: each thread reads one packed word, picks its nibble, looks
 * the code up in the NF4/FP4 table (a WGSL constant) and scales it by its block's absmax — itself
 * decoded from the 8-bit code, the nested absmax and the offset when double-quantised. The fp32 weight
 * never exists in GPU memory; only 16×16 of it at a time in each workgroup.
 *
 * One kernel serves both directions: out[m, c] = Σ_r a[m, r]·W(c, r) with W(c, r) = W[c, r] for the
 * forward (a = x, r over in) and W[r, c] for the input gradient (a = dy, r over out).
 *
 * That fused kernel is for few rows (generation: M ≤ FUSED_MAX_ROWS), where the product is bound by
 * reading the weight and 4 bits a weight is what counts. With more rows the product is bound by
 * arithmetic, so the weight is dequantised into a transient fp32 buffer (one dispatch, 8 weights a
 * thread) and core's register-blocked WGSL matmul runs on it; the buffer is released before the kernel
 * returns (back to the pool, where the next layer's reuses it): at most one layer's fp32 weight exists
 * at a time, as bitsandbytes does for batches (dequantise, then cuBLAS).
 */
const T = 16;

const f32Literal = (v: number) => {
  const s = Math.fround(v).toPrecision(9);
  return /[.e]/.test(s) ? s : `${s}.0`;
};

/**
 * The code table and `scale(block)` (a block's absmax: stored, or decoded from its 8-bit code, the nested
 * absmax and the offset) that both kernels use; they bind `am` (absmax or nested absmax), `ac` and `nmap`.
 */
function codesWgsl(quantType: QuantType, nested: boolean): string {
  return `const LUT = array<f32, 16>(${Array.from(codeTable(quantType), f32Literal).join(', ')});

fn scale(b: u32) -> f32 {
${nested
  ? `  let code = (ac[b >> 2u] >> (8u * (b & 3u))) & 255u;
  let s = nmap[code] * am[b / 256u];
  return s + u.offset;`
  : '  return am[b];'}
}`;
}

function kernel(quantType: QuantType, nested: boolean, transW: boolean): WgslKernel {
  return {
    key: `dequant4bit-${quantType}-${nested ? 'dq' : 'plain'}-${transW ? 'dx' : 'fwd'}`,
    code: () => /* wgsl */ `
struct U { M: u32, C: u32, R: u32, inF: u32, offset: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> qw: array<u32>;
@group(0) @binding(3) var<storage, read> am: array<f32>;
${nested ? `@group(0) @binding(4) var<storage, read> ac: array<u32>;
@group(0) @binding(5) var<storage, read> nmap: array<f32>;
@group(0) @binding(6) var<uniform> u: U;` : '@group(0) @binding(4) var<uniform> u: U;'}
${codesWgsl(quantType, nested)}
var<workgroup> As: array<f32, ${T * T}>;
var<workgroup> Ws: array<f32, ${T * T}>;

fn weight(e: u32) -> f32 {
  let j = e & 7u;
  let shift = 8u * (j >> 1u) + select(4u, 0u, (j & 1u) == 1u);
  let code = (qw[e >> 3u] >> shift) & 15u;
  let v = LUT[code];
  return v * scale(e / 64u);
}

@compute @workgroup_size(${T}, ${T})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let c = wid.x * ${T}u + lid.x;
  let m = wid.y * ${T}u + lid.y;
  var acc = 0.0;
  for (var r0 = 0u; r0 < u.R; r0 = r0 + ${T}u) {
    let ar = r0 + lid.x;
    var av = 0.0;
    if (m < u.M && ar < u.R) { av = a[m * u.R + ar]; }
    As[lid.y * ${T}u + lid.x] = av;
    let wr = r0 + lid.y;
    var wv = 0.0;
    if (wr < u.R && c < u.C) { wv = weight(${transW ? 'wr * u.inF + c' : 'c * u.inF + wr'}); }
    Ws[lid.y * ${T}u + lid.x] = wv;
    workgroupBarrier();
    for (var k = 0u; k < ${T}u; k = k + 1u) { acc = acc + As[lid.y * ${T}u + k] * Ws[k * ${T}u + lid.x]; }
    workgroupBarrier();
  }
  if (m < u.M && c < u.C) { out[m * u.C + c] = acc; }
}`,
  };
}

/** W [out, in] float32 from the packed codes: 8 weights (one packed word) a thread. */
function dequantKernel(quantType: QuantType, nested: boolean): WgslKernel {
  return {
    key: `dequant4bit-weight-${quantType}-${nested ? 'dq' : 'plain'}`,
    code: () => /* wgsl */ `
struct U { n: u32, offset: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> qw: array<u32>;
@group(0) @binding(2) var<storage, read> am: array<f32>;
${nested ? `@group(0) @binding(3) var<storage, read> ac: array<u32>;
@group(0) @binding(4) var<storage, read> nmap: array<f32>;
@group(0) @binding(5) var<uniform> u: U;` : '@group(0) @binding(3) var<uniform> u: U;'}
${codesWgsl(quantType, nested)}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let word = gid.x + gid.y * nwg.x * 64u;
  let e0 = word * 8u;
  if (e0 >= u.n) { return; }
  let q = qw[word];
  let s = scale(e0 / 64u);
  for (var j = 0u; j < 8u; j = j + 1u) {
    let e = e0 + j;
    if (e < u.n) {
      let shift = 8u * (j >> 1u) + select(4u, 0u, (j & 1u) == 1u);
      out[e] = LUT[(q >> shift) & 15u] * s;
    }
  }
}`,
  };
}

/** Rows up to which the fused kernel runs; above, dequantise + core's matmul. */
export const FUSED_MAX_ROWS = 16;

function run(inputs: Record<string, tf.TensorInfo | undefined>, attrs: Dequant4bitAttrs, backend: unknown): tf.TensorInfo {
  const { x, qweight, absmax, absmaxCodes, nestedAbsmax, nestedMap } = inputs;
  const { outFeatures, inFeatures, quantType, offset, transW } = attrs;
  const R = transW ? outFeatures : inFeatures;
  const C = transW ? inFeatures : outFeatures;
  const last = x!.shape[x!.shape.length - 1];
  if (last !== R || x!.dtype !== 'float32') {
    throw new PeftError('SHAPE_MISMATCH', `peftjs.Dequant4bitMatMul: x [${x!.shape}] (${x!.dtype}) must be float32 with last dim ${R}`);
  }
  const M = tf.util.sizeFromShape(x!.shape) / R;
  const nested = !absmax;
  if (nested && (!absmaxCodes || !nestedAbsmax || !nestedMap)) {
    throw new PeftError('INVALID_ARGUMENT', 'peftjs.Dequant4bitMatMul: give absmax, or absmaxCodes with nestedAbsmax and nestedMap');
  }
  if (M > FUSED_MAX_ROWS) {
    const n = outFeatures * inFeatures;
    const [w] = runWgsl(backend, dequantKernel(quantType, nested), {
      inputs: nested ? [qweight!, nestedAbsmax!, absmaxCodes!, nestedMap!] : [qweight!, absmax!],
      outputs: [{ shape: [outFeatures, inFeatures], dtype: 'float32' }],
      uniforms: [
        { type: 'uint32', data: [n] },
        { type: 'float32', data: [offset] },
      ],
      workgroups: dispatch1d(Math.ceil(n / 8), 64),
      name: 'Dequant4bitWeight',
    });
    try {
      // forward y = x·Wᵀ (transB), input gradient dx = dy·W
      return wgslMatmul(backend, { a: { ...x!, shape: [M, R] }, b: w, transB: !transW, outShape: [...x!.shape.slice(0, -1), C] });
    } finally {
      (backend as { disposeData(id: unknown): void }).disposeData(w.dataId);
    }
  }
  const ins = nested ? [x!, qweight!, nestedAbsmax!, absmaxCodes!, nestedMap!] : [x!, qweight!, absmax!];
  const [y] = runWgsl(backend, kernel(quantType, nested, transW), {
    inputs: ins,
    outputs: [{ shape: [...x!.shape.slice(0, -1), C], dtype: 'float32' }],
    uniforms: [
      { type: 'uint32', data: [M] },
      { type: 'uint32', data: [C] },
      { type: 'uint32', data: [R] },
      { type: 'uint32', data: [inFeatures] },
      { type: 'float32', data: [offset] },
    ],
    workgroups: [Math.ceil(C / T), Math.ceil(M / T), 1],
    name: transW ? 'Dequant4bitMatMulDx' : 'Dequant4bitMatMul',
  });
  return y;
}

let registered = false;
/**
 * Registers the webgpu fast path (once). linear4bit.ts calls it at import: a call, not a bare `import
 * './webgpu'`, so that no bundler can drop it as an unused module.
 */
export function registerDequantWebgpu(): void {
  if (registered) return;
  registered = true;
  registerFastPath(dequant4bitMatMulOp, {
    backendName: 'webgpu',
    kernelFunc: ({ inputs, attrs, backend }) => run(inputs as unknown as Record<string, tf.TensorInfo>, attrs, backend),
    // the base is frozen: dx = dy·W (or dy·Wᵀ) by the same kernel; the weight's inputs get zeros
    gradient: (dy, inputs: Dequant4bitInputs, attrs) => ({
      x: () => dequant4bitMatMulOp({ ...inputs, x: dy }, { ...attrs, transW: !attrs.transW }),
      qweight: () => tf.zeros(inputs.qweight!.shape, 'float32'),
      absmax: () => tf.zeros(inputs.absmax!.shape, 'float32'),
      absmaxCodes: () => tf.zeros(inputs.absmaxCodes!.shape, 'float32'),
      nestedAbsmax: () => tf.zeros(inputs.nestedAbsmax!.shape, 'float32'),
      nestedMap: () => tf.zeros(inputs.nestedMap!.shape, 'float32'),
    }),
  });
}
