import { PeftError } from '../errors';

/**
 * File access behind a small interface, so core and models run in Node (fs) and in a browser
 * (fetch, read-only). Nothing on the compute path imports a Node built-in.
 */
export interface FileSystem {
  readFile(path: string): Promise<Uint8Array>;
  exists(path: string): Promise<boolean>;
  /** Writes to a temp file beside `path`, then renames: a reader never sees a half-written file. */
  writeFileAtomic(path: string, data: Uint8Array | string): Promise<void>;
  mkdirp(path: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
  remove(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
}

export function joinPath(...parts: string[]): string {
  const joined = parts.filter((p) => p !== '').join('/');
  // collapse repeated slashes, but not the ones after a URL scheme (https://host)
  const m = /^[a-z][a-z0-9+.-]*:\/\//i.exec(joined);
  const head = m ? m[0] : '';
  return head + joined.slice(head.length).replace(/\/{2,}/g, '/').replace(/(^|\/)\.\//g, '$1');
}

export function dirname(path: string): string {
  const i = path.replace(/\/+$/, '').lastIndexOf('/');
  return i < 0 ? '.' : i === 0 ? '/' : path.slice(0, i);
}

const dynamicImport = (name: string): Promise<any> => import(/* @vite-ignore */ name);

let nodeFs: Promise<any> | undefined;
function fsp(): Promise<any> {
  return (nodeFs ??= dynamicImport('node:fs/promises'));
}

/** Node's file system. */
export const nodeFileSystem: FileSystem = {
  async readFile(path) {
    try {
      const b: Uint8Array = await (await fsp()).readFile(path);
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } catch (e: any) {
      if (e?.code === 'ENOENT') throw new PeftError('FILE_NOT_FOUND', `file not found: ${path}`, { cause: e });
      throw e;
    }
  },
  async exists(path) {
    try {
      await (await fsp()).stat(path);
      return true;
    } catch {
      return false;
    }
  },
  async writeFileAtomic(path, data) {
    const fs = await fsp();
    const tmp = `${path}.tmp-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const fh = await fs.open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, path);
  },
  async mkdirp(path) {
    await (await fsp()).mkdir(path, { recursive: true });
  },
  async readdir(path) {
    return (await fsp()).readdir(path);
  },
  async remove(path) {
    await (await fsp()).rm(path, { recursive: true, force: true });
  },
  async rename(from, to) {
    await (await fsp()).rename(from, to);
  },
};

/** Read-only access over fetch (a browser, or a model served over HTTP); `path` is a URL or relative to `base`. */
export function fetchFileSystem(base = ''): FileSystem {
  const url = (p: string) => (/^[a-z]+:\/\//i.test(p) || !base ? p : `${base.replace(/\/$/, '')}/${p}`);
  const readOnly = () => {
    throw new PeftError('UNSUPPORTED', 'this file system is read-only (fetch); save with a Node file system or download the bytes');
  };
  return {
    async readFile(path) {
      const r = await fetch(url(path));
      if (r.status === 404) throw new PeftError('FILE_NOT_FOUND', `file not found: ${url(path)}`);
      if (!r.ok) throw new PeftError('INVALID_FILE', `${url(path)}: HTTP ${r.status}`);
      return new Uint8Array(await r.arrayBuffer());
    },
    async exists(path) {
      const r = await fetch(url(path), { method: 'HEAD' });
      return r.ok;
    },
    writeFileAtomic: readOnly,
    mkdirp: readOnly,
    readdir: readOnly,
    remove: readOnly,
    rename: readOnly,
  };
}

let defaultFs: FileSystem | undefined;

/** Node's fs under Node, fetch elsewhere; `setFileSystem` overrides. */
export function getFileSystem(): FileSystem {
  if (defaultFs) return defaultFs;
  const isNode = typeof process !== 'undefined' && !!(process as any).versions?.node;
  return isNode ? nodeFileSystem : fetchFileSystem();
}

export function setFileSystem(fs: FileSystem | undefined): void {
  defaultFs = fs;
}

export async function readJson(path: string, fs: FileSystem = getFileSystem()): Promise<Record<string, unknown>> {
  const bytes = await fs.readFile(path);
  const text = new TextDecoder().decode(bytes);
  try {
    const v = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v;
  } catch (e) {
    throw new PeftError('INVALID_FILE', `${path}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
}

/** JSON as HF writes it: keys sorted, indent 2. */
export function stableJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value), null, 2) + '\n';
}
