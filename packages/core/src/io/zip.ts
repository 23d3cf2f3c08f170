import { PeftError } from '../errors';

/**
 * ZIP archives of a few files, for moving a saved adapter (HF's two files) in one piece: a browser
 * downloads one `.zip`, which unzips to a folder that HF PEFT's `from_pretrained` and peftjs's
 * `PeftModel.fromPretrained` read. Written uncompressed (safetensors barely compress) with a fixed
 * timestamp, so the same files always give the same bytes. Read: stored and deflated entries (a zip a
 * user re-made), through the platform's DecompressionStream.
 */

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const MAX_ENTRIES = 1024;
/** 1980-01-01 00:00 in DOS time: the earliest a zip can say; fixed so archives are reproducible. */
const DOS_DATE = (0 << 9) | (1 << 5) | 1;

/** A stored (uncompressed) ZIP of `files` (name → bytes or UTF-8 text), entries in the given order. */
export function zipFiles(files: Record<string, Uint8Array | string>): Uint8Array {
  const enc = new TextEncoder();
  const entries = Object.entries(files).map(([name, data]) => {
    if (!name || name.length > 1024 || name.startsWith('/') || name.includes('\\') || name.split('/').includes('..')) {
      throw new PeftError('INVALID_ARGUMENT', `zipFiles: ${JSON.stringify(name.slice(0, 80))} is not a relative file name`);
    }
    const bytes = typeof data === 'string' ? enc.encode(data) : data;
    if (bytes.byteLength >= 0xffffffff) throw new PeftError('LIMIT_EXCEEDED', `zipFiles: ${name} is 4 GiB or more (ZIP64 is not written)`);
    return { name: enc.encode(name), bytes, crc: crc32(bytes) };
  });
  if (entries.length > MAX_ENTRIES) throw new PeftError('LIMIT_EXCEEDED', `zipFiles: ${entries.length} files; at most ${MAX_ENTRIES}`);
  const localSize = entries.reduce((s, e) => s + 30 + e.name.length + e.bytes.byteLength, 0);
  const centralSize = entries.reduce((s, e) => s + 46 + e.name.length, 0);
  if (localSize + centralSize + 22 > 0xffffffff) throw new PeftError('LIMIT_EXCEEDED', 'zipFiles: the archive would be 4 GiB or more (ZIP64 is not written)');
  const out = new Uint8Array(localSize + centralSize + 22);
  const v = new DataView(out.buffer);
  let o = 0;
  const offsets: number[] = [];
  for (const e of entries) {
    offsets.push(o);
    v.setUint32(o, 0x04034b50, true);
    v.setUint16(o + 4, 20, true); // version needed: 2.0
    v.setUint16(o + 6, 0x0800, true); // UTF-8 names
    v.setUint16(o + 8, 0, true); // stored
    v.setUint16(o + 10, 0, true);
    v.setUint16(o + 12, DOS_DATE, true);
    v.setUint32(o + 14, e.crc, true);
    v.setUint32(o + 18, e.bytes.byteLength, true);
    v.setUint32(o + 22, e.bytes.byteLength, true);
    v.setUint16(o + 26, e.name.length, true);
    v.setUint16(o + 28, 0, true);
    out.set(e.name, o + 30);
    out.set(e.bytes, o + 30 + e.name.length);
    o += 30 + e.name.length + e.bytes.byteLength;
  }
  const cd = o;
  entries.forEach((e, i) => {
    v.setUint32(o, 0x02014b50, true);
    v.setUint16(o + 4, 20, true); // made by: 2.0, MS-DOS attributes
    v.setUint16(o + 6, 20, true);
    v.setUint16(o + 8, 0x0800, true);
    v.setUint16(o + 10, 0, true);
    v.setUint16(o + 12, 0, true);
    v.setUint16(o + 14, DOS_DATE, true);
    v.setUint32(o + 16, e.crc, true);
    v.setUint32(o + 20, e.bytes.byteLength, true);
    v.setUint32(o + 24, e.bytes.byteLength, true);
    v.setUint16(o + 28, e.name.length, true);
    // extra, comment, disk, internal attrs, external attrs stay 0
    v.setUint32(o + 42, offsets[i], true);
    out.set(e.name, o + 46);
    o += 46 + e.name.length;
  });
  v.setUint32(o, 0x06054b50, true);
  v.setUint16(o + 8, entries.length, true);
  v.setUint16(o + 10, entries.length, true);
  v.setUint32(o + 12, o - cd, true);
  v.setUint32(o + 16, cd, true);
  return out;
}

async function inflateRaw(data: Uint8Array, size: number, where: string): Promise<Uint8Array> {
  const DS = (globalThis as { DecompressionStream?: new (f: string) => TransformStream<Uint8Array, Uint8Array> }).DecompressionStream;
  if (!DS) throw new PeftError('UNSUPPORTED', `${where}: deflated, and this platform has no DecompressionStream`);
  const out = new Uint8Array(size);
  let n = 0;
  try {
    const reader = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DS('deflate-raw')).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.byteLength > size) throw new PeftError('INVALID_FILE', `${where}: inflates past its stated size of ${size} bytes`);
      out.set(value, n);
      n += value.byteLength;
    }
  } catch (e) {
    if (PeftError.isInstance(e)) throw e;
    throw new PeftError('INVALID_FILE', `${where}: corrupt deflate data`, { cause: e });
  }
  if (n !== size) throw new PeftError('INVALID_FILE', `${where}: inflated to ${n} bytes, the archive says ${size}`);
  return out;
}

/**
 * The files of a ZIP archive (name → bytes; folders left out), read from its central directory. Every
 * offset, size and CRC is checked; `source` names the archive in errors. Encrypted, ZIP64 and
 * multi-disk archives are refused by name.
 */
export async function unzipFiles(bytes: Uint8Array, source = 'zip archive'): Promise<Record<string, Uint8Array>> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = (what: string) => new PeftError('INVALID_FILE', `${source}: ${what}`);
  let eocd = -1;
  for (let i = bytes.byteLength - 22; i >= Math.max(0, bytes.byteLength - 22 - 0xffff); i--) {
    if (v.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad('not a ZIP archive (no end-of-central-directory record)');
  const count = v.getUint16(eocd + 10, true);
  const cdSize = v.getUint32(eocd + 12, true);
  const cdOff = v.getUint32(eocd + 16, true);
  if (v.getUint16(eocd + 4, true) !== 0 || v.getUint16(eocd + 8, true) !== count) throw bad('multi-disk archives are not supported');
  if (count === 0xffff || cdOff === 0xffffffff) throw bad('ZIP64 archives are not supported');
  if (count > MAX_ENTRIES) throw new PeftError('LIMIT_EXCEEDED', `${source}: ${count} entries; at most ${MAX_ENTRIES}`);
  if (cdOff + cdSize > eocd) throw bad('the central directory lies outside the archive');
  const dec = new TextDecoder('utf-8', { fatal: false });
  const out: Record<string, Uint8Array> = {};
  let o = cdOff;
  for (let i = 0; i < count; i++) {
    if (o + 46 > eocd || v.getUint32(o, true) !== 0x02014b50) throw bad(`central directory entry ${i} is corrupt`);
    const flags = v.getUint16(o + 8, true);
    const method = v.getUint16(o + 10, true);
    const crc = v.getUint32(o + 16, true);
    const csize = v.getUint32(o + 20, true);
    const size = v.getUint32(o + 24, true);
    const nlen = v.getUint16(o + 28, true);
    const next = o + 46 + nlen + v.getUint16(o + 30, true) + v.getUint16(o + 32, true);
    const local = v.getUint32(o + 42, true);
    if (next > eocd) throw bad(`central directory entry ${i} runs past its end`);
    const name = dec.decode(bytes.subarray(o + 46, o + 46 + nlen));
    o = next;
    const where = `${source}: ${JSON.stringify(name.slice(0, 120))}`;
    if (flags & 1) throw new PeftError('UNSUPPORTED', `${where} is encrypted`);
    if (name.endsWith('/')) continue;
    if (!name || name.startsWith('/') || name.includes('\\') || name.split('/').includes('..')) throw new PeftError('INVALID_FILE', `${where}: not a relative file name`);
    if (Object.hasOwn(out, name)) throw new PeftError('INVALID_FILE', `${where} appears twice`);
    if (local + 30 > bytes.byteLength || v.getUint32(local, true) !== 0x04034b50) throw new PeftError('INVALID_FILE', `${where}: its local header is missing or corrupt`);
    const start = local + 30 + v.getUint16(local + 26, true) + v.getUint16(local + 28, true);
    if (start + csize > cdOff) throw new PeftError('INVALID_FILE', `${where}: its data (${csize} bytes at ${start}) runs past the file data`);
    const raw = bytes.subarray(start, start + csize);
    let data: Uint8Array;
    if (method === 0) {
      if (csize !== size) throw new PeftError('INVALID_FILE', `${where}: stored, but its sizes differ (${csize} and ${size})`);
      data = raw.slice();
    } else if (method === 8) data = await inflateRaw(raw, size, where);
    else throw new PeftError('UNSUPPORTED', `${where}: compression method ${method}; only stored (0) and deflate (8) are read`);
    if (crc32(data) !== crc) throw new PeftError('INVALID_FILE', `${where}: CRC mismatch (the archive is damaged)`);
    out[name] = data;
  }
  return out;
}
