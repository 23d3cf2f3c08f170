import { describe, expect, it } from 'vitest';
import { crc32, unzipFiles, zipFiles } from './zip';

const enc = new TextEncoder();

/** A one-entry ZIP whose data is deflated (what a user's zip tool makes), built by hand. */
async function deflatedZip(name: string, data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream('deflate-raw'));
  const packed = new Uint8Array(await new Response(stream).arrayBuffer());
  const n = enc.encode(name);
  const out = new Uint8Array(30 + n.length + packed.length + 46 + n.length + 22);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0x04034b50, true);
  v.setUint16(8, 8, true);
  v.setUint32(14, crc32(data), true);
  v.setUint32(18, packed.length, true);
  v.setUint32(22, data.length, true);
  v.setUint16(26, n.length, true);
  out.set(n, 30);
  out.set(packed, 30 + n.length);
  const c = 30 + n.length + packed.length;
  v.setUint32(c, 0x02014b50, true);
  v.setUint16(c + 10, 8, true);
  v.setUint32(c + 16, crc32(data), true);
  v.setUint32(c + 20, packed.length, true);
  v.setUint32(c + 24, data.length, true);
  v.setUint16(c + 28, n.length, true);
  out.set(n, c + 46);
  const e = c + 46 + n.length;
  v.setUint32(e, 0x06054b50, true);
  v.setUint16(e + 8, 1, true);
  v.setUint16(e + 10, 1, true);
  v.setUint32(e + 12, 46 + n.length, true);
  v.setUint32(e + 16, c, true);
  return out;
}

describe('zip', () => {
  it('CRC-32 is the standard one', () => {
    expect(crc32(enc.encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array())).toBe(0);
  });

  it('round-trips files and folders, with the same bytes every time', async () => {
    const files = { 'adapter_config.json': '{"r": 8}', 'adapter_model.safetensors': new Uint8Array(1000).map((_, i) => i * 7), 'other/adapter_config.json': '{}' };
    const zip = zipFiles(files);
    expect(zipFiles(files)).toEqual(zip);
    const back = await unzipFiles(zip);
    expect(Object.keys(back)).toEqual(Object.keys(files));
    expect(new TextDecoder().decode(back['adapter_config.json'])).toBe('{"r": 8}');
    expect(back['adapter_model.safetensors']).toEqual(files['adapter_model.safetensors']);
    expect(await unzipFiles(zipFiles({}))).toEqual({});
  });

  it('reads a deflated entry', async () => {
    const data = enc.encode('lora '.repeat(500));
    expect(await unzipFiles(await deflatedZip('a.txt', data))).toEqual({ 'a.txt': data });
  });

  it('refuses damaged archives and unsafe names, naming the entry', async () => {
    const zip = zipFiles({ 'adapter_model.safetensors': new Uint8Array([1, 2, 3, 4]) });
    const flipped = zip.slice();
    flipped[30 + 'adapter_model.safetensors'.length] ^= 1;
    await expect(unzipFiles(flipped, 'dl.zip')).rejects.toThrow(/dl\.zip: "adapter_model\.safetensors": CRC mismatch/);
    await expect(unzipFiles(zip.slice(0, zip.length - 5), 'dl.zip')).rejects.toThrow(/dl\.zip: not a ZIP archive/);
    await expect(unzipFiles(enc.encode('just text'), 'x.zip')).rejects.toThrow(/not a ZIP archive/);
    const cut = zip.slice();
    new DataView(cut.buffer).setUint32(cut.length - 6, 1, true); // central directory offset past its start
    await expect(unzipFiles(cut)).rejects.toThrow(/central directory/);
    expect(() => zipFiles({ '../evil': 'x' })).toThrow(/not a relative file name/);
    const evil = zipFiles({ 'aa/evil': 'x' });
    evil.set(enc.encode('..'), 30);
    evil.set(enc.encode('..'), evil.length - 22 - 7);
    await expect(unzipFiles(evil)).rejects.toThrow(/"\.\.\/evil": not a relative file name/);
    const bad = (await deflatedZip('b.txt', enc.encode('hello hello hello'))).slice();
    bad[30 + 5] ^= 0xff;
    await expect(unzipFiles(bad)).rejects.toThrow(/b\.txt/);
  });
});
