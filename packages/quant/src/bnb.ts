import { PeftError } from '@peftjs/core';

/**
 * bitsandbytes' 4-bit quantisation, re-derived from its CUDA kernels (csrc/kernels.cu) and
 * functional.py, in float32 arithmetic (every product and sum rounded with Math.fround, as the
 * kernels' `float`). docs/methods/qlora.md describes each step; tools/reference/bnb4bit_ref.py is the
 * independent NumPy derivation the tests compare with bit for bit.
 *
 * Packing here is bitsandbytes' byte layout (element 2i in the high nibble of byte i, 2i+1 in the low
 * one), four bytes a little-endian 32-bit word on the device (`packBytes` / `unpackWords`).
 */

const fr = Math.fround;

export type QuantType = 'nf4' | 'fp4';
export const BLOCKSIZE = 64;
export const NESTED_BLOCKSIZE = 256;

/** NF4's 16 values (kernels.cu's nf4_dequantization_lut, ascending; index = code). */
export const NF4_TABLE = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);
/** The NF4 decision tree's split points (dQuantizeNF4), ascending: code = how many lie strictly below x. */
const NF4_SPLITS = Float64Array.from(
  [
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984, -0.13791173323988914,
    -0.045525018125772476, 0.03979014977812767, 0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
  ].map(fr),
);
/** FP4's magnitudes by the 3 low bits (fp4_dequantization_lut); bit 3 is the sign. */
const FP4_MAGNITUDE = [0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25].map(fr);
export const FP4_TABLE = Float32Array.from([...FP4_MAGNITUDE, ...FP4_MAGNITUDE.map((v) => -v)]);
/** dQuantizeFP4's split points on |x| (ascending) and the 3-bit code of each interval between them. */
const FP4_SPLITS = Float64Array.from([0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333].map(fr));
const FP4_BUCKET_CODE = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

export function codeTable(t: QuantType): Float32Array {
  return t === 'nf4' ? NF4_TABLE : FP4_TABLE;
}

/**
 * dQuantizeNF4 for a float32 x: the tree is a binary search over sorted split points, so its code is
 * the number of split points x exceeds (a NaN exceeds none: code 0, as in the tree).
 */
export function nf4Code(x: number): number {
  let c = 0;
  for (let i = 0; i < 15; i++) if (x > NF4_SPLITS[i]) c++;
  return c;
}

/** dQuantizeFP4: sign bit (x < 0; not for -0 or NaN), then the interval of |x|. */
export function fp4Code(x: number): number {
  const sign = x < 0 ? 0b1000 : 0;
  const a = Math.abs(x);
  let k = 0;
  for (let i = 0; i < 7; i++) if (a > FP4_SPLITS[i]) k++;
  return FP4_BUCKET_CODE[k] + sign;
}

/** torch.linspace(start, end, steps, dtype=float32) on the CPU (its scalar formula, step in float32). */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const s = fr(start);
  const e = fr(end);
  const step = fr(fr(e - s) / fr(steps - 1));
  const half = Math.floor(steps / 2);
  const out = new Float32Array(steps);
  for (let i = 0; i < steps; i++) out[i] = i < half ? fr(s + fr(step * i)) : fr(e - fr(step * (steps - i - 1)));
  return out;
}

let dynamicMapCache: Float32Array | undefined;

/**
 * functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for exponent i = 0…6,
 * the midpoints of linspace(0.1, 1, 2^i + 1) times 10^(i−6), both signs, plus 0 and 1, sorted (256 entries).
 */
export function dynamicMap(): Float32Array {
  if (dynamicMapCache) return dynamicMapCache;
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const b = linspaceF32(0.1, 1, 2 ** i + 1);
    const scale = fr(10 ** (i - 6));
    for (let j = 0; j + 1 < b.length; j++) data.push(fr(scale * fr(fr(b[j] + b[j + 1]) / 2)));
    for (let j = 0; j + 1 < b.length; j++) data.push(fr(-scale * fr(fr(b[j] + b[j + 1]) / 2)));
  }
  data.push(0, 1);
  while (data.length < 256) data.push(0);
  data.sort((a, b) => a - b);
  return (dynamicMapCache = Float32Array.from(data));
}

/** dQuantize<0>: binary search of the sorted 256-entry code, then the nearer neighbour by the float32 midpoint. */
export function dynamicCode(code: Float32Array, x: number): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let val = code[pivot];
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upperPivot === 255) upper = code[upperPivot];
  if (lowerPivot === 0) lower = code[lowerPivot];
  if (x > val) return x > fr(fr(upper + val) * 0.5) ? upperPivot : pivot;
  return x < fr(fr(lower + val) * 0.5) ? lowerPivot : pivot;
}

function checkFinite(a: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new PeftError('INVALID_ARGUMENT', `${what}: element ${i} is ${a[i]}; 4-bit quantisation needs finite weights`);
  }
}

/** Per-block max |x| (the padding of the last block is 0 and cannot raise it) and its float32 reciprocal. */
function blockScales(a: Float32Array, blocksize: number): { absmax: Float32Array; inv: Float32Array } {
  const nb = Math.ceil(a.length / blocksize);
  const absmax = new Float32Array(nb);
  const inv = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    let m = 0;
    const end = Math.min(a.length, (b + 1) * blocksize);
    for (let i = b * blocksize; i < end; i++) {
      const v = Math.abs(a[i]);
      if (v > m) m = v;
    }
    absmax[b] = m;
    inv[b] = fr(1 / m); // 1/0 = Infinity; then 0·Infinity = NaN, which the code trees send to code 0
  }
  return { absmax, inv };
}

export interface Quantized4bit {
  /** bitsandbytes' bytes: ceil(n/2), element 2i in the high nibble. */
  packed: Uint8Array;
  /** float32 absmax per block of 64. */
  absmax: Float32Array;
}

/** quantize_4bit without double quantisation: codes two a byte and the absmax of each block of 64. */
export function quantize4bit(a: Float32Array, quantType: QuantType, what = 'weight'): Quantized4bit {
  checkFinite(a, what);
  const { absmax, inv } = blockScales(a, BLOCKSIZE);
  const n = a.length;
  const packed = new Uint8Array((n + 1) >> 1);
  const codeOf = quantType === 'nf4' ? nf4Code : fp4Code;
  for (let i = 0; i < n + (n & 1); i += 2) {
    const s = inv[Math.floor(i / BLOCKSIZE)];
    const hi = codeOf(fr(a[i] * s));
    // the odd tail's partner is the block's zero padding, quantised as the kernel does (0·(1/absmax))
    const lo = codeOf(fr((i + 1 < n ? a[i + 1] : 0) * s));
    packed[i >> 1] = (hi << 4) | lo;
  }
  return { packed, absmax };
}

/** dequantize_4bit: table[code]·absmax[block], float32, `n` elements. */
export function dequantize4bit(packed: Uint8Array, absmax: Float32Array, n: number, quantType: QuantType): Float32Array {
  const t = codeTable(quantType);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const byte = packed[i >> 1];
    const c = i & 1 ? byte & 15 : byte >> 4;
    out[i] = fr(t[c] * absmax[Math.floor(i / BLOCKSIZE)]);
  }
  return out;
}

export interface DoubleQuant {
  /** 8-bit dynamic codes of absmax − offset, one a block of 64. */
  codes: Uint8Array;
  /** float32 absmax of each block of 256 codes. */
  nestedAbsmax: Float32Array;
  /** The mean of the absmax values (float32). */
  offset: number;
}

/**
 * compress_statistics: offset = mean(absmax) (the float64 sum, divided, rounded once to float32), then
 * quantize_blockwise(absmax − offset, blocksize=256) with the dynamic map.
 */
export function doubleQuantize(absmax: Float32Array): DoubleQuant {
  let sum = 0;
  for (let i = 0; i < absmax.length; i++) sum += absmax[i];
  const offset = fr(sum / absmax.length);
  const centred = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) centred[i] = fr(absmax[i] - offset);
  const { absmax: nestedAbsmax, inv } = blockScales(centred, NESTED_BLOCKSIZE);
  const map = dynamicMap();
  const codes = new Uint8Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) codes[i] = dynamicCode(map, fr(centred[i] * inv[Math.floor(i / NESTED_BLOCKSIZE)]));
  return { codes, nestedAbsmax, offset };
}

/** dequantize_blockwise(codes, state2) + offset: map[code]·nestedAbsmax[block of 256] + offset, float32. */
export function dequantizeAbsmax(codes: Uint8Array, nestedAbsmax: Float32Array, offset: number, map: Float32Array = dynamicMap()): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = fr(fr(map[codes[i]] * nestedAbsmax[Math.floor(i / NESTED_BLOCKSIZE)]) + offset);
  return out;
}

/** Bytes as little-endian 32-bit words (zero padded): the device layout of packed codes. */
export function packBytes(bytes: Uint8Array): Int32Array {
  const words = new Int32Array(Math.ceil(bytes.length / 4));
  for (let i = 0; i < bytes.length; i++) words[i >> 2] |= bytes[i] << (8 * (i & 3));
  return words;
}

/** The first `n` bytes of little-endian 32-bit words. */
export function unpackWords(words: Int32Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (words[i >> 2] >>> (8 * (i & 3))) & 255;
  return out;
}
