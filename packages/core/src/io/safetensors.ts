import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../errors';
import { DEFAULT_MAX_LOAD_BYTES, type FileSystem, getFileSystem, insidePath, joinPath, readFileChecked, readJson } from './fs';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_SIZE: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Headers above this are refused (the format's own reference implementation caps at 100 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** At most this many tensors in one file (bounded work per header; the largest HF shards hold a few thousand). */
export const MAX_TENSORS = 100_000;
/** Tensor names longer than this are refused. */
export const MAX_TENSOR_NAME = 1024;
/** At most this many dimensions per tensor. */
export const MAX_RANK = 16;

export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** The tensor's bytes (a view into the file's buffer). */
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  /** Tensors by name (a null-prototype object: a tensor may be named `__proto__`). */
  tensors: Record<string, RawTensor>;
  /** `__metadata__` (a null-prototype string → string map). */
  metadata: Record<string, string>;
}

function bad(source: string, msg: string): never {
  throw new PeftError('INVALID_FILE', `${source}: ${msg}`);
}

/** A short, bounded description of an untrusted value for an error message (never the value whole). */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length} item${v.length === 1 ? '' : 's'}`;
  switch (typeof v) {
    case 'string':
      return v.length > 40 ? `${JSON.stringify(v.slice(0, 40))}… (${v.length} characters)` : JSON.stringify(v);
    case 'number':
    case 'boolean':
      return String(v);
    case 'undefined':
      return 'nothing';
    default:
      return `an ${typeof v}`;
  }
}

/** A name from a file, cut to a readable length for a message. */
export function clipName(name: string): string {
  return name.length > 80 ? `${JSON.stringify(name.slice(0, 80))}… (${name.length} characters)` : JSON.stringify(name);
}

/** A plain Uint8Array over the same bytes (a Node Buffer's slice() shares memory and its .buffer is a pool). */
function plainBytes(buf: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(buf) === Uint8Array.prototype ? buf : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * Parses and validates a safetensors buffer as the format's reference implementation does; nothing
 * is trusted from the header: the header is a JSON object of tensors (and an optional `__metadata__`
 * string → string map), every tensor's byte count matches its shape and dtype, and the tensors' byte
 * ranges are contiguous and cover the data section exactly (no gap, overlap or trailing bytes, so a
 * header length off by a byte or two is an error, not every tensor read shifted).
 */
export function parseSafetensors(input: Uint8Array, source = 'safetensors'): SafetensorsFile {
  if (!(input instanceof Uint8Array)) throw new PeftError('INVALID_ARGUMENT', `${source}: parseSafetensors needs a Uint8Array (or Buffer), got ${describeValue(input)}`);
  const buf = plainBytes(input);
  if (buf.byteLength < 8) bad(source, `file is ${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) bad(source, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLen = Number(n);
  if (8 + headerLen > buf.byteLength) bad(source, `header length ${headerLen} runs past the end of the file (${buf.byteLength} bytes): truncated?`);
  if (headerLen < 2 || buf[8] !== 0x7b) bad(source, 'header does not start with "{" (not a safetensors file, or a wrong header length)');
  // bounded work: count the JSON's structural bytes before parsing (a legal header of a million empty
  // tensors would take seconds and gigabytes to parse)
  let structural = 0;
  for (let i = 8; i < 8 + headerLen; i++) {
    const c = buf[i];
    if (c === 0x7b || c === 0x5b || c === 0x2c) structural++;
  }
  if (structural > 16 * (MAX_TENSORS + 1)) bad(source, `header has more structure than ${MAX_TENSORS} tensors can need (${structural} objects, arrays and commas)`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + headerLen)));
  } catch (e) {
    // the parser's message quotes the text: keep only the position
    const pos = /position (\d+)/.exec(e instanceof Error ? e.message : '');
    bad(source, `header is not valid UTF-8 JSON${pos ? ` (at position ${pos[1]})` : ''}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) bad(source, 'header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = buf.byteLength - dataStart;
  const tensors: Record<string, RawTensor> = Object.create(null);
  const metadata: Record<string, string> = Object.create(null);
  const names = Object.keys(header);
  if (names.length > MAX_TENSORS + 1) bad(source, `header lists ${names.length} entries, more than the ${MAX_TENSORS}-tensor limit`);
  const spans: [number, number, string][] = [];
  const h = header as Record<string, unknown>;
  for (const name of names) {
    const entry = h[name];
    if (name === '__metadata__') {
      if (entry === null) continue;
      if (typeof entry !== 'object' || Array.isArray(entry)) bad(source, `__metadata__ must be an object of strings, got ${describeValue(entry)}`);
      for (const k of Object.keys(entry as object)) {
        const v = (entry as Record<string, unknown>)[k];
        if (typeof v !== 'string') bad(source, `__metadata__ ${clipName(k)} must be a string, got ${describeValue(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const tn = `tensor ${clipName(name)}`;
    if (name.length === 0 || name.length > MAX_TENSOR_NAME) bad(source, `${tn}: a tensor name must be 1 to ${MAX_TENSOR_NAME} characters`);
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) bad(source, `${tn}: entry is not an object`);
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string' || !Object.hasOwn(DTYPE_SIZE, e.dtype)) bad(source, `${tn}: unknown dtype ${describeValue(e.dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(source, `${tn}: shape (${describeValue(shape)}) is not a list of at most ${MAX_RANK} non-negative integers`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(source, `${tn}: data_offsets (${describeValue(off)}) must be two non-negative integers`);
    }
    const [begin, end] = off as [number, number];
    if (begin > end) bad(source, `${tn}: data_offsets [${begin}, ${end}] are reversed`);
    if (end > dataLen) bad(source, `${tn}: data_offsets [${begin}, ${end}] run past the data section (${dataLen} bytes): truncated file?`);
    const dtype = e.dtype as SafetensorsDtype;
    let expected = DTYPE_SIZE[dtype];
    for (const d of shape as number[]) {
      expected *= d;
      if (!Number.isSafeInteger(expected)) bad(source, `${tn}: shape [${shape}] has too many elements`);
    }
    if (expected !== end - begin) {
      bad(source, `${tn}: shape [${shape}] × ${dtype} needs ${expected} bytes but data_offsets give ${end - begin}`);
    }
    spans.push([begin, end, name]);
    tensors[name] = { dtype, shape: (shape as number[]).slice(), bytes: buf.subarray(dataStart + begin, dataStart + end) };
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let pos = 0;
  for (let i = 0; i < spans.length; i++) {
    const [b, e, name] = spans[i];
    if (b < pos) bad(source, `tensors ${clipName(spans[i - 1][2])} and ${clipName(name)} overlap (bytes ${b}–${pos})`);
    if (b > pos) bad(source, `bytes ${pos}–${b} of the data section belong to no tensor (before tensor ${clipName(name)}): a wrong header length or a corrupt file`);
    pos = e;
  }
  if (pos !== dataLen) {
    bad(source, `the tensors cover ${pos} of the data section's ${dataLen} bytes; the last ${dataLen - pos} belong to no tensor (a wrong header length or a corrupt file)`);
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
  // Uint8Array's own slice (a copy), not a Buffer's (a view of its pool)
  return new Ctor(Uint8Array.prototype.slice.call(bytes).buffer as ArrayBuffer);
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
  const file = parseSafetensors(await readFileChecked(path, fs), path);
  const out: Record<string, tf.Tensor> = Object.create(null);
  try {
    for (const [name, t] of Object.entries(file.tensors)) out[name] = rawToTensor(name, t, path);
  } catch (e) {
    tf.dispose(Object.values(out));
    throw e;
  }
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
 * The weight files of a model folder: `model.safetensors`, or the shards `model.safetensors.index.json`
 * lists (each checked to stay inside `dir`).
 */
export async function modelWeightFiles(dir: string, fs: FileSystem = getFileSystem()): Promise<string[]> {
  const single = joinPath(dir, 'model.safetensors');
  const index = joinPath(dir, 'model.safetensors.index.json');
  if (await fs.exists(single)) return [single];
  if (await fs.exists(index)) {
    const idx = await readJson(index, fs);
    const map = idx.weight_map;
    if (!map || typeof map !== 'object' || Array.isArray(map)) throw new PeftError('INVALID_FILE', `${index}: no "weight_map" object`);
    const files = new Set<string>();
    for (const [tensor, file] of Object.entries(map as Record<string, unknown>)) {
      if (typeof file !== 'string') throw new PeftError('INVALID_FILE', `${index}: weight_map entry ${clipName(tensor)} must be a file name, got ${describeValue(file)}`);
      files.add(file);
    }
    if (files.size === 0) throw new PeftError('INVALID_FILE', `${index}: "weight_map" lists no file`);
    return [...files].map((f) => insidePath(dir, f, `${index}: weight_map file`));
  }
  throw new PeftError('FILE_NOT_FOUND', `${dir}: no model.safetensors or model.safetensors.index.json`);
}

/**
 * Loads a model's weights from a folder: `model.safetensors`, or the shards listed in
 * `model.safetensors.index.json` (HF's `weight_map`). Each shard is parsed and converted in turn.
 */
export async function loadModelWeights(
  dir: string,
  fs: FileSystem = getFileSystem(),
  onTensor?: (name: string, t: tf.Tensor) => void,
  opts: { maxBytes?: number } = {},
): Promise<Record<string, tf.Tensor>> {
  const files = await modelWeightFiles(dir, fs);
  const out: Record<string, tf.Tensor> = Object.create(null);
  const budget = opts.maxBytes ?? DEFAULT_MAX_LOAD_BYTES;
  let used = 0;
  const seen = new Set<string>();
  try {
    for (const f of files) {
      const bytes = await readFileChecked(f, fs, budget - used, 'maxBytes (the load budget)');
      used += bytes.byteLength;
      const file = parseSafetensors(bytes, f);
      for (const [name, t] of Object.entries(file.tensors)) {
        if (Object.hasOwn(out, name) || seen.has(name)) throw new PeftError('INVALID_FILE', `${f}: tensor ${clipName(name)} is also in another shard`);
        seen.add(name);
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
