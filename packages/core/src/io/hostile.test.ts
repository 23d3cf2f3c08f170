// Hostile and broken files (issue 14): every bad input is a PeftError naming the file or tensor, never
// a stack overflow, an untyped error, a hang, unbounded memory, or data read silently wrong.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftError, loadModelWeights, parseSafetensors, rawToArray, rawToTensor, readJson, serializeSafetensors, nodeFileSystem } from '../index';
import { peftError, peftErrorAsync } from '../../../../tools/testing/errors';

function fileWith(header: unknown, data: Uint8Array, headerText?: string): Uint8Array {
  const json = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const good = () =>
  serializeSafetensors({
    a: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
    b: { dtype: 'F32', shape: [1], data: new Float32Array([3]) },
  });

describe('safetensors against hostile headers', () => {
  it('deeply nested dtype, shape or data_offsets give a PeftError, not a stack overflow', () => {
    const nest = '['.repeat(200_000) + ']'.repeat(200_000);
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      const entry: Record<string, string> = { dtype: '"F32"', shape: '[1]', data_offsets: '[0,4]' };
      entry[field] = nest;
      const text = `{"x":{${Object.entries(entry).map(([k, v]) => `"${k}":${v}`).join(',')}}}`;
      const e = peftError(() => parseSafetensors(fileWith(null, new Uint8Array(4), text), 'deep.safetensors'));
      expect(e.message).toMatch(/deep\.safetensors/);
      expect(e.message.length).toBeLessThan(400);
    }
  });

  it('a tensor named __proto__ is a tensor, not the prototype of the result', () => {
    const text = '{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    const f = parseSafetensors(fileWith(null, new Uint8Array(new Float32Array([7]).buffer), text));
    expect(Object.getPrototypeOf(f.tensors)).toBe(null);
    expect(Object.keys(f.tensors)).toEqual(['__proto__']);
    expect(Array.from(rawToArray(f.tensors['__proto__']))).toEqual([7]);
  });

  it('__metadata__ must be a string → string map', () => {
    for (const md of [{ a: 1 }, { a: { b: 'c' } }, ['x'], 'text', 5]) {
      const e = peftError(() => parseSafetensors(fileWith({ __metadata__: md }, new Uint8Array(0)), 'm.safetensors'));
      expect(e.code).toBe('INVALID_FILE');
      expect(e.message).toMatch(/__metadata__/);
    }
    const ok = parseSafetensors(fileWith({ __metadata__: { format: 'pt', __proto__x: 'y' } }, new Uint8Array(0)));
    expect(ok.metadata.format).toBe('pt');
    expect(Object.getPrototypeOf(ok.metadata)).toBe(null);
  });

  it('bytes no tensor covers are refused (gap, trailing bytes)', () => {
    const gap = fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [1, 2] } }, new Uint8Array(2));
    expect(peftError(() => parseSafetensors(gap, 'g')).message).toMatch(/belong to no tensor/);
    const trailing = fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(3));
    expect(peftError(() => parseSafetensors(trailing, 't')).message).toMatch(/belong to no tensor/);
  });

  it('a header length off by one or two is an error, not every tensor shifted', () => {
    const bytes = good();
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    for (const d of [1, 2]) {
      const b = bytes.slice();
      new DataView(b.buffer).setBigUint64(0, BigInt(n - d), true);
      peftError(() => parseSafetensors(b, 'shifted'));
    }
  });

  it('a legal header of a million empty tensors is refused quickly', () => {
    const parts: string[] = [];
    for (let i = 0; i < 1_200_000; i++) parts.push(`"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
    const file = fileWith(null, new Uint8Array(0), `{${parts.join(',')}}`);
    const t0 = performance.now();
    expect(peftError(() => parseSafetensors(file, 'huge')).message).toMatch(/huge/);
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  it('reads a Node Buffer at its byteOffset (a pooled Buffer)', () => {
    const bytes = good();
    const pooled = Buffer.from(bytes); // small Buffers are slices of a shared pool
    expect(pooled.byteOffset).toBeGreaterThan(0);
    const f = parseSafetensors(pooled);
    expect(Array.from(rawToArray(f.tensors.a))).toEqual([1, 2]);
    expect(Array.from(rawToArray(f.tensors.b))).toEqual([3]);
    const a = rawToTensor('a', f.tensors.a);
    const b = rawToTensor('b', f.tensors.b);
    expect(Array.from(a.dataSync())).toEqual([1, 2]);
    expect(Array.from(b.dataSync())).toEqual([3]);
    tf.dispose([a, b]);
  });

  it('error messages never quote unbounded input', () => {
    const long = 'x'.repeat(100_000);
    const e1 = peftError(() => parseSafetensors(fileWith({ a: { dtype: long, shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), 'f'));
    expect(e1.message.length).toBeLessThan(400);
    const e2 = peftError(() => parseSafetensors(fileWith({ [long]: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), 'f'));
    expect(e2.message.length).toBeLessThan(400);
    const e3 = peftError(() => parseSafetensors(fileWith(null, new Uint8Array(0), `{"secret-text-${long}`), 'f'));
    expect(e3.message).not.toMatch(/secret/);
  });
});

describe('model folders against hostile paths', () => {
  const tmp = () => mkdtempSync(join(tmpdir(), 'peftjs-hostile-'));
  const index = (dir: string, map: Record<string, unknown>) =>
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));

  it('weight_map entries that leave the folder are refused, and no outside bytes reach the message', async () => {
    const root = tmp();
    const model = join(root, 'model');
    mkdirSync(model);
    writeFileSync(join(root, 'secret.safetensors'), 'TOPSECRET-CONTENTS');
    for (const entry of ['../secret.safetensors', `${root}/secret.safetensors`, 'a/../../secret.safetensors', 'file:///etc/passwd', '..\\secret.safetensors']) {
      index(model, { 'w.weight': entry });
      const e = await peftErrorAsync(loadModelWeights(model));
      expect(e.code).toBe('INVALID_FILE');
      expect(e.message).not.toMatch(/TOPSECRET/);
    }
  });

  it('/dev/zero, a FIFO and a folder named like a weight file are refused at once', async () => {
    const dir = tmp();
    symlinkSync('/dev/zero', join(dir, 'zero.safetensors'));
    execFileSync('mkfifo', [join(dir, 'fifo.safetensors')]);
    mkdirSync(join(dir, 'folder.safetensors'));
    for (const f of ['zero.safetensors', 'fifo.safetensors', 'folder.safetensors']) {
      index(dir, { 'w.weight': f });
      const t0 = performance.now();
      const e = await peftErrorAsync(loadModelWeights(dir));
      expect(e.code).toBe('INVALID_FILE');
      expect(e.message).toMatch(f);
      expect(performance.now() - t0).toBeLessThan(2000);
    }
    const single = tmp();
    mkdirSync(join(single, 'model.safetensors'));
    expect((await peftErrorAsync(loadModelWeights(single))).message).toMatch(/is a folder/);
  });

  it('a file larger than the load budget is refused before it is read', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'model.safetensors'), good());
    const e = await peftErrorAsync(loadModelWeights(dir, nodeFileSystem, undefined, { maxBytes: 16 }));
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(Object.keys(await loadModelWeights(dir, nodeFileSystem, undefined, { maxBytes: 1e6 })).sort()).toEqual(['a', 'b']);
  });

  it('JSON files: deep nesting and parse errors are PeftErrors without the file text', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'deep.json'), `{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}`);
    expect((await peftErrorAsync(readJson(join(dir, 'deep.json')))).message).toMatch(/nested/);
    writeFileSync(join(dir, 'bad.json'), '{"k": PRIVATE-TOKEN-12345');
    const e = await peftErrorAsync(readJson(join(dir, 'bad.json')));
    expect(e.message).not.toMatch(/PRIVATE/);
    expect(e.message).toMatch(/bad\.json/);
  });

  it('a too-long path is a PeftError, not ENAMETOOLONG', async () => {
    const dir = tmp();
    const e = await peftErrorAsync(nodeFileSystem.writeFileAtomic(join(dir, 'x'.repeat(300)), 'data'));
    expect(e.code).toBe('INVALID_ARGUMENT');
  });
});
