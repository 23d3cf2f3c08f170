import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../errors';
import { type FileSystem, getFileSystem, joinPath, readJson } from './fs';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_SIZE: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Headers above this are refused (the format's own reference implementation caps at 100 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** The tensor's bytes (a view into the file's buffer). */
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  tensors: Record<string, RawTensor>;
  metadata: Record<string, string>;
}

function bad(source: string, msg: string): never {
  throw new PeftError('INVALID_FILE', `${source}: ${msg}`);
}

/** Parses and validates a safetensors buffer; nothing is trusted from the header. */
export function parseSafetensors(buf: Uint8Array, source = 'safetensors'): SafetensorsFile {
  if (buf.byteLength < 8) bad(source, `file is ${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) bad(source, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLen = Number(n);
  if (8 + headerLen > buf.byteLength) bad(source, `header length ${headerLen} runs past the end of the file (${buf.byteLength} bytes): truncated?`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + headerLen)));
  } catch (e) {
    bad(source, `header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) bad(source, 'header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = buf.byteLength - dataStart;
  const tensors: Record<string, RawTensor> = {};
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null) bad(source, '__metadata__ must be an object of strings');
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) bad(source, `tensor "${name}": entry is not an object`);
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_SIZE)) bad(source, `tensor "${name}": unknown dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(source, `tensor "${name}": shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(source, `tensor "${name}": data_offsets ${JSON.stringify(off)} must be two non-negative integers`);
    }
    const [begin, end] = off as [number, number];
    if (begin > end) bad(source, `tensor "${name}": data_offsets [${begin}, ${end}] are reversed`);
    if (end > dataLen) bad(source, `tensor "${name}": data_offsets [${begin}, ${end}] run past the data section (${dataLen} bytes): truncated file?`);
    const dtype = e.dtype as SafetensorsDtype;
    const shape = e.shape as number[];
    const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[dtype];
    if (expected !== end - begin) {
      bad(source, `tensor "${name}": shape [${shape}] × ${dtype} needs ${expected} bytes but data_offsets give ${end - begin}`);
    }
    spans.push([begin, end, name]);
    tensors[name] = { dtype, shape, bytes: buf.subarray(dataStart + begin, dataStart + end) };
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] < spans[i - 1][1]) {
      bad(source, `tensors "${spans[i - 1][2]}" and "${spans[i][2]}" overlap (bytes ${spans[i][0]}–${spans[i - 1][1]})`);
    }
  }
  return { tensors, metadata };
}

function bf16ToF32(bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength / 2;
  const out = new Float32Array(n);
  const u32 = new Uint32Array(out.buffer);
  const src = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) u32[i] = src.getUint16(2 * i, true) << 16;
  return out;
}

function f16ToF32(bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength / 2;
  const out = new Float32Array(n);
  const src = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) {
    const h = src.getUint16(2 * i, true);
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    out[i] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
  }
  return out;
}

/** Copies the bytes out as a typed array of the given kind (handles unaligned views). */
function typed<T>(bytes: Uint8Array, Ctor: new (b: ArrayBuffer) => T): T {
  return new Ctor(bytes.slice().buffer);
}

/** A raw tensor as a tfjs tensor: floats become float32, integers int32 (I64 checked to fit), BOOL bool. */
export function rawToTensor(name: string, t: RawTensor, source = 'safetensors'): tf.Tensor {
  const { dtype, shape, bytes } = t;
  switch (dtype) {
    case 'F32':
      return tf.tensor(typed(bytes, Float32Array), shape, 'float32');
    case 'F64':
      return tf.tensor(Float32Array.from(typed(bytes, Float64Array)), shape, 'float32');
    case 'F16':
      return tf.tensor(f16ToF32(bytes), shape, 'float32');
    case 'BF16':
      return tf.tensor(bf16ToF32(bytes), shape, 'float32');
    case 'I64': {
      const src = typed(bytes, BigInt64Array);
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        if (src[i] > 2147483647n || src[i] < -2147483648n) bad(source, `tensor "${name}": I64 value ${src[i]} does not fit int32`);
        out[i] = Number(src[i]);
      }
      return tf.tensor(out, shape, 'int32');
    }
    case 'I32':
      return tf.tensor(typed(bytes, Int32Array), shape, 'int32');
    case 'I16':
      return tf.tensor(Int32Array.from(typed(bytes, Int16Array)), shape, 'int32');
    case 'I8':
      return tf.tensor(Int32Array.from(typed(bytes, Int8Array)), shape, 'int32');
    case 'U8':
      return tf.tensor(Int32Array.from(bytes), shape, 'int32');
    case 'BOOL':
      return tf.tensor(Uint8Array.from(bytes), shape, 'bool');
  }
}

/** Reads the values of a raw tensor as numbers (float64 precision where the file has it). */
export function rawToArray(t: RawTensor): Float64Array {
  switch (t.dtype) {
    case 'F64':
      return typed(t.bytes, Float64Array);
    case 'I64':
      return Float64Array.from(typed(t.bytes, BigInt64Array), Number);
    // decoded on the host, as rawToTensor decodes them (no tensor, so no read back from a GPU)
    case 'F32':
      return Float64Array.from(typed(t.bytes, Float32Array));
    case 'F16':
      return Float64Array.from(f16ToF32(t.bytes));
    case 'BF16':
      return Float64Array.from(bf16ToF32(t.bytes));
    case 'I32':
      return Float64Array.from(typed(t.bytes, Int32Array));
    case 'I16':
      return Float64Array.from(typed(t.bytes, Int16Array));
    case 'I8':
      return Float64Array.from(typed(t.bytes, Int8Array));
    case 'U8':
      return Float64Array.from(t.bytes);
    case 'BOOL':
      return Float64Array.from(t.bytes, (b) => (b ? 1 : 0));
    default:
      throw new PeftError('INVALID_FILE', `safetensors: unsupported dtype ${String(t.dtype)}`);
  }
}

export interface TensorToWrite {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array | Float64Array | BigInt64Array | Uint16Array;
}

function f32ToBf16(x: Float32Array): Uint16Array {
  const u32 = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = u32[i];
    // round to nearest even, NaN kept quiet
    out[i] = (v & 0x7fffffff) > 0x7f800000 ? (v >>> 16) | 0x40 : (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** Serializes tensors as safetensors: header padded with spaces to 8 bytes, tensors in name order. */
export function serializeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const name of names) {
    const t = tensors[name];
    const n = t.shape.reduce((a, b) => a * b, 1);
    let bytes: Uint8Array;
    if (t.dtype === 'BF16' && t.data instanceof Float32Array) bytes = new Uint8Array(f32ToBf16(t.data).buffer);
    else bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    if (bytes.byteLength !== n * DTYPE_SIZE[t.dtype]) {
      throw new PeftError('INVALID_ARGUMENT', `tensor "${name}": ${bytes.byteLength} bytes of data for shape [${t.shape}] × ${t.dtype}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    chunks.push(bytes);
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(pad));
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let p = 8 + json.byteLength;
  for (const c of chunks) {
    out.set(c, p);
    p += c.byteLength;
  }
  return out;
}

/** tfjs tensors → safetensors bytes (float32 as F32 or BF16/F16 on request, int32 as I64 or I32). */
export async function tensorsToSafetensors(
  tensors: Record<string, tf.Tensor>,
  opts: { metadata?: Record<string, string>; floatDtype?: 'F32' | 'BF16'; intDtype?: 'I64' | 'I32' } = {},
): Promise<Uint8Array> {
  const out: Record<string, TensorToWrite> = {};
  for (const [name, t] of Object.entries(tensors)) {
    const data = await t.data();
    if (t.dtype === 'float32') out[name] = { dtype: opts.floatDtype ?? 'F32', shape: t.shape, data: data as Float32Array };
    else if (t.dtype === 'int32') {
      out[name] = opts.intDtype === 'I32'
        ? { dtype: 'I32', shape: t.shape, data: data as Int32Array }
        : { dtype: 'I64', shape: t.shape, data: BigInt64Array.from(data as Int32Array, (v) => BigInt(v)) };
    } else if (t.dtype === 'bool') out[name] = { dtype: 'BOOL', shape: t.shape, data: Uint8Array.from(data as Uint8Array) };
    else throw new PeftError('INVALID_ARGUMENT', `tensor "${name}": dtype ${t.dtype} cannot be written to safetensors`);
  }
  return serializeSafetensors(out, opts.metadata);
}

/** Loads one .safetensors file as tfjs tensors (the caller owns them). */
export async function loadSafetensors(path: string, fs: FileSystem = getFileSystem()): Promise<Record<string, tf.Tensor>> {
  const file = parseSafetensors(await fs.readFile(path), path);
  const out: Record<string, tf.Tensor> = {};
  for (const [name, t] of Object.entries(file.tensors)) out[name] = rawToTensor(name, t, path);
  return out;
}

/** Writes tensors atomically as safetensors. */
export async function saveSafetensors(
  path: string,
  tensors: Record<string, tf.Tensor>,
  opts: { metadata?: Record<string, string>; fs?: FileSystem } = {},
): Promise<void> {
  const bytes = await tensorsToSafetensors(tensors, { metadata: opts.metadata });
  await (opts.fs ?? getFileSystem()).writeFileAtomic(path, bytes);
}

/**
 * Loads a model's weights from a folder: `model.safetensors`, or the shards listed in
 * `model.safetensors.index.json` (HF's `weight_map`). Each shard is parsed and converted in turn.
 */
export async function loadModelWeights(
  dir: string,
  fs: FileSystem = getFileSystem(),
  onTensor?: (name: string, t: tf.Tensor) => void,
): Promise<Record<string, tf.Tensor>> {
  const single = joinPath(dir, 'model.safetensors');
  const index = joinPath(dir, 'model.safetensors.index.json');
  let files: string[];
  if (await fs.exists(single)) files = [single];
  else if (await fs.exists(index)) {
    const idx = await readJson(index, fs);
    const map = idx.weight_map as Record<string, string> | undefined;
    if (!map || typeof map !== 'object') throw new PeftError('INVALID_FILE', `${index}: no "weight_map" object`);
    files = [...new Set(Object.values(map))].map((f) => joinPath(dir, f));
  } else {
    throw new PeftError('FILE_NOT_FOUND', `${dir}: no model.safetensors or model.safetensors.index.json`);
  }
  const out: Record<string, tf.Tensor> = {};
  try {
    for (const f of files) {
      const file = parseSafetensors(await fs.readFile(f), f);
      for (const [name, t] of Object.entries(file.tensors)) {
        const x = rawToTensor(name, t, f);
        if (onTensor) onTensor(name, x);
        else out[name] = x;
      }
    }
  } catch (e) {
    tf.dispose(Object.values(out));
    throw e;
  }
  return out;
}
