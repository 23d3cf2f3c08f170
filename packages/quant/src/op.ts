import * as tf from '@tensorflow/tfjs';
import { PeftError, defineOp, dispatch1d, hostBackend, linear2d, linearOp, runWgsl, type WgslKernel } from '@peftjs/core';
import { BLOCKSIZE, NESTED_BLOCKSIZE, codeTable, type QuantType } from './bnb';

/**
 * `peftjs.Dequant4bitMatMul`: a matmul with a bitsandbytes 4-bit weight W [out, in], dequantised on the
 * fly. `transW` false: y = x·Wᵀ (x [..., in] → [..., out], the forward); true: y = x·W (x [..., out] →
 * [..., in], the input gradient dx = dy·W). The base is frozen: the weight's inputs get zero gradients.
 *
 * Inputs (device layout, see ./bnb.ts): `qweight` int32 words of bitsandbytes' bytes (8 codes a word);
 * either `absmax` (float32, one a block of 64) or, double-quantised, `absmaxCodes` (int32 words of the
 * 8-bit codes), `nestedAbsmax` (float32, one a block of 256 codes) and `nestedMap` (the 256-entry map)
 * with the `offset` attribute. The reference (tfjs ops: dequantise, then matMul) runs on the CPU
 * backends and materialises this one layer's weight transiently; webgpu runs ./webgpu.ts.
 */
export type Dequant4bitInputs = {
  x: tf.Tensor;
  qweight: tf.Tensor;
  absmax?: tf.Tensor;
  absmaxCodes?: tf.Tensor;
  nestedAbsmax?: tf.Tensor;
  nestedMap?: tf.Tensor;
};
export type Dequant4bitAttrs = { outFeatures: number; inFeatures: number; quantType: QuantType; offset: number; transW: boolean };

/**
 * `peftjs.UnpackBytes`: little-endian int32 words → their bytes as int32 (0…255), [words] → [n]. An
 * integer kernel of its own because tfjs has no shifts and its wasm/webgpu backends divide int32 in
 * float32 (24 bits: a packed word would lose its low bytes). CPU backends unpack the host data they
 * already hold; webgpu runs one WGSL dispatch.
 */
const UNPACK = 'peftjs.UnpackBytes';
const unpackHost = ({ inputs, attrs, backend }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown }): tf.TensorInfo => {
  const n = (attrs as { n: number }).n;
  const be = hostBackend(backend, UNPACK);
  const words = be.readSync(inputs.x!.dataId) as Int32Array;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = (words[i >> 2] >>> (8 * (i & 3))) & 255;
  return { dataId: be.write(out, [n], 'int32'), shape: [n], dtype: 'int32' };
};
for (const backendName of ['cpu', 'wasm']) tf.registerKernel({ kernelName: UNPACK, backendName, kernelFunc: unpackHost });
const unpackWgsl: WgslKernel = {
  key: 'unpack-bytes',
  code: () => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<i32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<uniform> n: u32;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= n) { return; }
  out[i] = i32((w[i >> 2u] >> (8u * (i & 3u))) & 255u);
}`,
};
tf.registerKernel({
  kernelName: UNPACK,
  backendName: 'webgpu',
  kernelFunc: ({ inputs, attrs, backend }: any) =>
    runWgsl(backend, unpackWgsl, {
      inputs: [inputs.x],
      outputs: [{ shape: [attrs.n], dtype: 'int32' }],
      uniforms: [{ type: 'uint32', data: [attrs.n] }],
      workgroups: dispatch1d(attrs.n, 64),
      name: 'UnpackBytes',
    })[0],
});

/**
 * `peftjs.Dequant4bitWeight` on the CPU backends: W [out, in] float32 from the packed codes in one host
 * loop over the data the backend already holds — the same float32 products as `dequantReference`'s tfjs
 * ops (table[code]·absmax, absmax = map[code]·nested + offset), bit for bit, without its dozen
 * whole-layer intermediate tensors. The op's CPU path dequantises a layer with it.
 */
const DEQUANT_HOST = 'peftjs.Dequant4bitWeight';
const dequantHost = ({ inputs, attrs, backend }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap; backend: unknown }): tf.TensorInfo => {
  const { outFeatures, inFeatures, quantType, offset } = attrs as unknown as Dequant4bitAttrs;
  const be = hostBackend(backend, DEQUANT_HOST);
  const n = outFeatures * inFeatures;
  const blocks = Math.ceil(n / BLOCKSIZE);
  const words = be.readSync(inputs.qweight!.dataId) as Int32Array;
  let scales: Float32Array;
  if (inputs.absmax) scales = be.readSync(inputs.absmax.dataId) as Float32Array;
  else {
    const codes = be.readSync(inputs.absmaxCodes!.dataId) as Int32Array;
    const nested = be.readSync(inputs.nestedAbsmax!.dataId) as Float32Array;
    const map = be.readSync(inputs.nestedMap!.dataId) as Float32Array;
    scales = new Float32Array(blocks);
    const off = Math.fround(offset);
    for (let b = 0; b < blocks; b++) {
      const code = (codes[b >> 2] >>> (8 * (b & 3))) & 255;
      scales[b] = Math.fround(Math.fround(map[code] * nested[(b / NESTED_BLOCKSIZE) | 0]) + off);
    }
  }
  const table = codeTable(quantType);
  const out = new Float32Array(n);
  for (let e = 0; e < n; e++) {
    // element 2i is the high nibble of byte i (bitsandbytes), bytes little-endian in the words
    const byte = (words[e >> 3] >>> (8 * ((e >> 1) & 3))) & 255;
    const code = e & 1 ? byte & 15 : byte >> 4;
    out[e] = table[code] * scales[(e / BLOCKSIZE) | 0];
  }
  return { dataId: be.write(out, [outFeatures, inFeatures], 'float32'), shape: [outFeatures, inFeatures], dtype: 'float32' };
};
for (const backendName of ['cpu', 'wasm']) tf.registerKernel({ kernelName: DEQUANT_HOST, backendName, kernelFunc: dequantHost });

/** One layer's fp32 weight: the host loop on the CPU backends, the tfjs-op reference elsewhere. */
function dequantWeight(inputs: Omit<Dequant4bitInputs, 'x'>, attrs: Dequant4bitAttrs): tf.Tensor2D {
  if (!['cpu', 'wasm'].includes(tf.getBackend())) return dequantReference(inputs, attrs);
  const ins: tf.NamedTensorMap = { qweight: inputs.qweight };
  for (const k of ['absmax', 'absmaxCodes', 'nestedAbsmax', 'nestedMap'] as const) if (inputs[k]) ins[k] = inputs[k]!;
  return tf.engine().runKernel(DEQUANT_HOST, ins, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D;
}

function wordBytes(words: tf.Tensor, n: number): tf.Tensor {
  return tf.engine().runKernel(UNPACK, { x: words }, { n }) as tf.Tensor;
}

/** Per-block scales × values: v [≥ n] times s[block of `size`], the first n. */
function scaleBlocks(v: tf.Tensor, s: tf.Tensor, n: number, size: number): tf.Tensor {
  const nb = Math.ceil(n / size);
  const head = v.size >= nb * size ? v.slice(0, nb * size) : tf.pad(v, [[0, nb * size - v.size]]);
  return tf.mul(head.reshape([nb, size]), s.reshape([nb, 1])).reshape([-1]).slice(0, n);
}

/** The dequantised absmax values (float32 [blocks]): absmax itself, or map[code]·nested[block of 256] + offset. */
export function absmaxReference(inputs: Omit<Dequant4bitInputs, 'x'>, blocks: number, offset: number): tf.Tensor {
  if (inputs.absmax) return inputs.absmax;
  const { absmaxCodes, nestedAbsmax, nestedMap } = inputs;
  if (!absmaxCodes || !nestedAbsmax || !nestedMap) {
    throw new PeftError('INVALID_ARGUMENT', 'peftjs.Dequant4bitMatMul: give absmax, or absmaxCodes with nestedAbsmax and nestedMap');
  }
  const codes = wordBytes(absmaxCodes, blocks);
  return tf.add(scaleBlocks(tf.gather(nestedMap, codes), nestedAbsmax, blocks, NESTED_BLOCKSIZE), tf.scalar(offset));
}

/** W [out, in] float32 from the packed codes: table[code]·absmax[block of 64]. */
export function dequantReference(inputs: Omit<Dequant4bitInputs, 'x'>, attrs: Pick<Dequant4bitAttrs, 'outFeatures' | 'inFeatures' | 'quantType' | 'offset'>): tf.Tensor2D {
  const n = attrs.outFeatures * attrs.inFeatures;
  return tf.tidy(() => {
    const bytes = wordBytes(inputs.qweight, (n + 1) >> 1).reshape([-1, 1]);
    // element 2i is the high nibble of byte i, 2i+1 the low one
    const hi = tf.floorDiv(bytes, tf.scalar(16, 'int32'));
    const lo = tf.mod(bytes, tf.scalar(16, 'int32'));
    const codes = tf.concat([hi, lo], 1).reshape([-1]).slice(0, n);
    const values = tf.gather(tf.tensor1d(codeTable(attrs.quantType)), codes);
    const absmax = absmaxReference(inputs, Math.ceil(n / BLOCKSIZE), attrs.offset);
    return scaleBlocks(values, absmax, n, BLOCKSIZE).reshape([attrs.outFeatures, attrs.inFeatures]) as tf.Tensor2D;
  });
}

const WEIGHT_INPUTS = ['qweight', 'absmax', 'absmaxCodes', 'nestedAbsmax', 'nestedMap'] as const;

/** x·Wᵀ (the forward, through core's peftjs.Linear: the product an fp32 Linear runs on this backend) or x·W (dx). */
function product(x: tf.Tensor, w: tf.Tensor2D, transW: boolean): tf.Tensor {
  if (!transW) return linearOp({ x, weight: w }, {});
  return linear2d(x, (x2) => tf.matMul(x2, w));
}

export const dequant4bitMatMulOp: ReturnType<typeof defineOp<Dequant4bitInputs, Dequant4bitAttrs>> = defineOp<Dequant4bitInputs, Dequant4bitAttrs>({
  name: 'peftjs.Dequant4bitMatMul',
  inputNames: ['x', 'qweight', 'absmax', 'absmaxCodes', 'nestedAbsmax', 'nestedMap'],
  describe: 'x [..., in] (or [..., out] with transW), W 4-bit [out, in]',
  // The layer's fp32 weight exists only inside this call: the gradient dequantises it again (dx = dy·W by
  // the op with transW flipped) instead of the tape keeping it, so training holds no layer's fp32 weight
  // between its forward and its backward. The codes and scales are frozen (zero gradients).
  reference: (inputs, attrs) => {
    const present = WEIGHT_INPUTS.filter((n) => inputs[n]);
    const f = tf.customGrad(((x: tf.Tensor, ...rest: tf.Tensor[]) => {
      const ws = rest.slice(0, present.length); // tfjs passes a save() function after the inputs
      const w = Object.fromEntries(present.map((n, i) => [n, ws[i]])) as Omit<Dequant4bitInputs, 'x'>;
      const value = tf.tidy(() => product(x, dequantWeight(w, attrs), attrs.transW));
      const gradFunc = (dy: tf.Tensor) => [
        dequant4bitMatMulOp({ ...w, x: dy }, { ...attrs, transW: !attrs.transW }),
        ...ws.map((t) => tf.zeros(t.shape, 'float32')),
      ];
      return { value, gradFunc };
    }) as any);
    return f(inputs.x, ...present.map((n) => inputs[n]!)) as tf.Tensor;
  },
});

/** y = x·dequant(W)ᵀ (+ bias) through the op. */
export function dequant4bitLinear(x: tf.Tensor, w: Omit<Dequant4bitInputs, 'x'>, attrs: Omit<Dequant4bitAttrs, 'transW'>, bias?: tf.Tensor): tf.Tensor {
  const last = x.shape[x.shape.length - 1];
  if (last !== attrs.inFeatures) {
    throw new PeftError('SHAPE_MISMATCH', `Linear4bit(${attrs.inFeatures}, ${attrs.outFeatures}): input [${x.shape}] has ${last} features, not ${attrs.inFeatures}`);
  }
  const y = dequant4bitMatMulOp({ x, ...w }, { ...attrs, transW: false });
  if (!bias) return y;
  const out = tf.add(y, bias);
  y.dispose();
  return out;
}
