// bitsandbytes' 4-bit algorithm against the independent NumPy reference (tools/reference/bnb4bit_ref.py,
// its outputs in fixtures/bnb4bit_ref.json as sha256 of the bytes): codes, absmax, double-quantised
// absmax and dequantised weights equal bit for bit on the bundled model's weight matrices, including
// sizes that are not a multiple of 64 or 256 and a block of zeros.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseSafetensors, rawToArray } from '@peftjs/core';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import {
  FP4_TABLE,
  NF4_TABLE,
  dequantize4bit,
  dequantizeAbsmax,
  doubleQuantize,
  dynamicCode,
  dynamicMap,
  fp4Code,
  nf4Code,
  packBytes,
  quantize4bit,
  unpackWords,
  type QuantType,
} from './bnb';

const ref = JSON.parse(readFileSync(new URL('../fixtures/bnb4bit_ref.json', import.meta.url), 'utf8'));
const file = parseSafetensors(new Uint8Array(readFileSync(`${tinyLlamaDir()}/model.safetensors`)), 'tiny-llama');
const weight = (name: string) => Float32Array.from(rawToArray(file.tensors[name]));
const sha = (a: ArrayBufferView) => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');

function input(desc: string): Float32Array {
  const m = /^(\S+?)(?:\[:(\d+)\])?( with a zero block)?$/.exec(desc)!;
  let a = weight(m[1]);
  if (m[2]) a = a.slice(0, Number(m[2]));
  if (m[3]) a.fill(0, 64, 128);
  return a;
}

describe('bitsandbytes 4-bit, bit for bit with the NumPy reference', () => {
  it('the dynamic 8-bit map', () => {
    const map = dynamicMap();
    expect(sha(map)).toBe(ref.dynamicMapSha256);
    expect(Array.from(map)).toEqual(ref.dynamicMap);
  });

  for (const c of ref.cases) {
    it(`${c.tensor} ${c.quantType}${c.doubleQuant ? ' + double quant' : ''} (${c.numel} elements)`, () => {
      const a = input(c.tensor);
      expect(a.length).toBe(c.numel);
      const t = c.quantType as QuantType;
      const q = quantize4bit(a, t);
      expect(Array.from(q.packed.slice(0, 16))).toEqual(c.packedHead);
      expect(sha(q.packed)).toBe(c.packedSha256);
      expect(sha(q.absmax)).toBe(c.absmaxSha256);
      let absmax = q.absmax;
      if (c.doubleQuant) {
        const dq = doubleQuantize(q.absmax);
        expect(Array.from(dq.codes.slice(0, 16))).toEqual(c.absmaxCodesHead);
        expect(sha(dq.codes)).toBe(c.absmaxCodesSha256);
        expect(Array.from(dq.nestedAbsmax)).toEqual(c.nestedAbsmax);
        expect(dq.offset).toBe(c.offset);
        absmax = dequantizeAbsmax(dq.codes, dq.nestedAbsmax, dq.offset);
        expect(sha(absmax)).toBe(c.absmaxDequantSha256);
      }
      const w = dequantize4bit(q.packed, absmax, a.length, t);
      expect(Array.from(w.slice(0, 8))).toEqual(c.dequantHead);
      expect(sha(w)).toBe(c.dequantSha256);
    });
  }

  it('ties: split points, dynamic-map midpoints and their float32 neighbours get the reference codes', () => {
    expect(ref.ties.nf4.x.map(nf4Code)).toEqual(ref.ties.nf4.code);
    expect(ref.ties.fp4.x.map(fp4Code)).toEqual(ref.ties.fp4.code);
    const map = dynamicMap();
    expect(ref.ties.dynamic.x.length).toBeGreaterThan(300);
    expect(ref.ties.dynamic.x.map((x: number) => dynamicCode(map, x))).toEqual(ref.ties.dynamic.code);
  });

  it('the code trees: table values map to their own codes, split points go down, ties to the left', () => {
    for (let c = 0; c < 16; c++) expect(nf4Code(NF4_TABLE[c])).toBe(c);
    for (let c = 0; c < 16; c++) if (c !== 8) expect(fp4Code(FP4_TABLE[c])).toBe(c); // -0 has no sign bit
    expect(nf4Code(Math.fround(0.03979014977812767))).toBe(7); // not above the split
    expect(nf4Code(NaN)).toBe(0);
    expect(fp4Code(-0)).toBe(0);
  });

  it('device words hold the bytes little-endian', () => {
    const b = Uint8Array.from([0x12, 0x34, 0x56, 0x78, 0x9a]);
    const w = packBytes(b);
    expect(Array.from(w)).toEqual([0x78563412, 0x9a]);
    expect(Array.from(unpackWords(w, 5))).toEqual(Array.from(b));
  });

  it('non-finite weights are refused naming the tensor', () => {
    expect(() => quantize4bit(Float32Array.from([1, NaN]), 'nf4', 'q_proj.weight')).toThrow(/q_proj.weight: element 1 is NaN/);
  });
});
