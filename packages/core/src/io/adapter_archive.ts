import type { PeftModel } from '../peft_model';
import { memoryFileSystem } from './kv_fs';
import { zipFiles } from './zip';

const ROOT = 'adapter';

/**
 * What `savePretrained` writes, as bytes by file name, without a disk: `adapter_config.json` and
 * `adapter_model.safetensors` for the default adapter, `<name>/…` for the others (HF PEFT's layout).
 */
export async function adapterFiles(peft: PeftModel, opts: { selectedAdapters?: string[] } = {}): Promise<Record<string, Uint8Array>> {
  const fs = memoryFileSystem();
  await peft.savePretrained(ROOT, { ...opts, fs });
  const out: Record<string, Uint8Array> = {};
  for (const [path, bytes] of fs.snapshot()) out[path.slice(ROOT.length + 1)] = bytes;
  return out;
}

/**
 * The saved adapter as one ZIP (stored, reproducible: the same weights give the same bytes). Unzipped, it
 * is the folder HF PEFT's `PeftModel.from_pretrained` reads; in JS, `PeftModel.fromPretrained(model, '.',
 * { fs: memoryFileSystem(await unzipFiles(bytes)) })` reads it without unzipping to disk.
 */
export async function adapterZip(peft: PeftModel, opts: { selectedAdapters?: string[] } = {}): Promise<Uint8Array> {
  return zipFiles(await adapterFiles(peft, opts));
}

/**
 * The adapter ZIP as a Blob, for a download in a browser:
 *   const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: 'adapter.zip' });
 *   a.click();
 */
export async function adapterBlob(peft: PeftModel, opts: { selectedAdapters?: string[] } = {}): Promise<Blob> {
  return new Blob([(await adapterZip(peft, opts)) as Uint8Array<ArrayBuffer>], { type: 'application/zip' });
}
