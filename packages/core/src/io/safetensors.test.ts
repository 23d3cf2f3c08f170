import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  PeftError,
  loadModelWeights,
  loadSafetensors,
  parseSafetensors,
  rawToTensor,
  serializeSafetensors,
  tensorsToSafetensors,
} from '../index';
import { HF } from '../../../../tools/testing/fixtures';
import { peftError } from '../../../../tools/testing/errors';

/** Builds a file from a raw header object and a data section. */
function fileWith(header: unknown, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]) {
  const e = peftError(fn);
  for (const p of parts) expect(e.message).toMatch(p);
}

describe('safetensors', () => {
  it('reads an HF PEFT adapter file written by Python', () => {
    const f = parseSafetensors(
      new Uint8Array(readFileSync(`${HF}llama_lora_qv/adapter/adapter_model.safetensors`)),
      'adapter',
    );
    expect(f.metadata).toEqual({ format: 'pt' });
    const a = f.tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'];
    expect(a.dtype).toBe('F32');
    expect(a.shape).toEqual([4, 32]);
  });

  it('round-trips every dtype it writes', async () => {
    const bytes = serializeSafetensors(
      {
        f32: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1.5, -2, 3.25, 4]) },
        i64: { dtype: 'I64', shape: [3], data: new BigInt64Array([1n, -2n, 2147483647n]) },
        i32: { dtype: 'I32', shape: [2], data: new Int32Array([7, -8]) },
        u8: { dtype: 'U8', shape: [2], data: new Uint8Array([0, 255]) },
        bf16: { dtype: 'BF16', shape: [2], data: new Float32Array([1.0, -3.140625]) },
        f16: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x3555]) },
      },
      { format: 'pt' },
    );
    expect(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8).toBe(0); // header padded to 8 bytes, as HF writes it
    const f = parseSafetensors(bytes, 'mem');
    const val = (k: string) => Array.from(rawToTensor(k, f.tensors[k]).dataSync());
    expect(val('f32')).toEqual([1.5, -2, 3.25, 4]);
    expect(val('i64')).toEqual([1, -2, 2147483647]);
    expect(val('i32')).toEqual([7, -8]);
    expect(val('u8')).toEqual([0, 255]);
    expect(val('bf16')).toEqual([1.0, -3.140625]);
    expect(val('f16')[0]).toBe(1);
    expect(val('f16')[1]).toBe(-2);
    expect(val('f16')[2]).toBeCloseTo(0.333, 3);
    expect(f.metadata).toEqual({ format: 'pt' });
  });

  it('writes tfjs tensors and reads them back bit-exactly', async () => {
    const t = tf.randomNormal([3, 5]);
    const bytes = await tensorsToSafetensors({ w: t, ids: tf.tensor1d([1, 2, 3], 'int32') });
    const f = parseSafetensors(bytes);
    expect(f.tensors.ids.dtype).toBe('I64');
    expect(Array.from(rawToTensor('w', f.tensors.w).dataSync())).toEqual(Array.from(t.dataSync()));
  });

  it('refuses a truncated file naming the tensor', () => {
    const good = serializeSafetensors({ a: { dtype: 'F32', shape: [4], data: new Float32Array(4) } });
    expectError(() => parseSafetensors(good.subarray(0, good.length - 3), 'model.safetensors'), 'model.safetensors', '"a"', /run past|truncated/);
    expectError(() => parseSafetensors(good.subarray(0, 5), 'x.safetensors'), 'shorter than the 8-byte');
    expectError(() => parseSafetensors(good.subarray(0, 20), 'x.safetensors'), 'header length');
  });

  it('refuses offsets out of range, overlapping, reversed, or not matching shape × dtype', () => {
    const data = new Uint8Array(16);
    expectError(() => parseSafetensors(fileWith({ a: { dtype: 'F32', shape: [2], data_offsets: [8, 24] } }, data)), '"a"', 'run past');
    expectError(
      () => parseSafetensors(fileWith({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, data)),
      'overlap',
      '"a"',
      '"b"',
    );
    expectError(() => parseSafetensors(fileWith({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, data)), 'needs 12 bytes');
    expectError(() => parseSafetensors(fileWith({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, data)), 'reversed');
    expectError(() => parseSafetensors(fileWith({ a: { dtype: 'Q4', shape: [2], data_offsets: [0, 8] } }, data)), 'unknown dtype', '"Q4"');
    expectError(() => parseSafetensors(fileWith({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 8] } }, data)), 'shape');
  });

  it('refuses a huge header and a non-JSON header', () => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, 1n << 40n, true);
    expectError(() => parseSafetensors(b, 'big.safetensors'), 'exceeds');
    const c = new Uint8Array(16);
    new DataView(c.buffer).setBigUint64(0, 8n, true);
    c.set(new TextEncoder().encode('{"a": no'), 8);
    expectError(() => parseSafetensors(c, 'bad.safetensors'), 'not valid UTF-8 JSON');
  });

  it('loads sharded weights through model.safetensors.index.json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-shard-'));
    writeFileSync(join(dir, 'model-00001-of-00002.safetensors'), await tensorsToSafetensors({ a: tf.ones([2]) }));
    writeFileSync(join(dir, 'model-00002-of-00002.safetensors'), await tensorsToSafetensors({ b: tf.zeros([3]) }));
    writeFileSync(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }),
    );
    const w = await loadModelWeights(dir);
    expect(Object.keys(w).sort()).toEqual(['a', 'b']);
    expect(w.b.shape).toEqual([3]);
    await expect(loadModelWeights(join(dir, 'nope'))).rejects.toThrow(/no model.safetensors/);
    await expect(loadSafetensors(join(dir, 'missing.safetensors'))).rejects.toThrow(/file not found/);
  });
});
