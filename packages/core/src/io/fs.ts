import { PeftError } from '../errors';

/**
 * File access behind a small interface, so core and models run in Node (fs) and in a browser
 * (fetch, read-only). Nothing on the compute path imports a Node built-in.
 */
export interface FileSystem {
  /**
   * Reads a regular file whole. With `maxBytes`, a file larger than that is refused before it is read
   * (PeftError LIMIT_EXCEEDED); a directory, device or FIFO is refused (INVALID_FILE).
   */
  readFile(path: string, opts?: { maxBytes?: number }): Promise<Uint8Array>;
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

/** What a model load may allocate by default (files read and tensors made); `maxBytes` overrides. */
export const DEFAULT_MAX_LOAD_BYTES = 16 * 2 ** 30;
/** JSON files (configs, tokenizers, index files) larger than this are refused. */
export const MAX_JSON_BYTES = 512 * 2 ** 20;
/** JSON nested deeper than this is refused (no config HF writes comes near). */
export const MAX_JSON_DEPTH = 64;

/** A Node fs error as a PeftError naming the path (never the file's contents). */
export function ioError(e: unknown, path: string, op: string): PeftError {
  if (PeftError.isInstance(e)) return e;
  const code = (e as { code?: string } | null)?.code;
  switch (code) {
    case 'ENOENT':
      return new PeftError('FILE_NOT_FOUND', `file not found: ${path}`, { cause: e });
    case 'ENOTDIR':
      return new PeftError('FILE_NOT_FOUND', `${path}: a part of this path is not a folder`, { cause: e });
    case 'EISDIR':
      return new PeftError('INVALID_FILE', `${path}: is a folder, not a file`, { cause: e });
    case 'ENAMETOOLONG':
      return new PeftError('INVALID_ARGUMENT', `${path.slice(0, 200)}…: the path (or a name in it) is too long for the file system`, { cause: e });
    default:
      return new PeftError('IO_ERROR', `${path}: cannot ${op} (${code ?? (e instanceof Error ? e.name : 'error')})`, { cause: e });
  }
}

/**
 * `rel` (a file name from a weight map or a config) joined to `dir`, refused unless it stays inside
 * `dir`: no absolute path, URL, `..` segment, backslash or NUL. `what` names the field in the message.
 */
export function insidePath(dir: string, rel: unknown, what: string): string {
  const shown = typeof rel === 'string' ? JSON.stringify(rel.length > 80 ? `${rel.slice(0, 80)}…` : rel) : typeof rel;
  if (typeof rel !== 'string' || rel.length === 0 || rel.length > 1024) {
    throw new PeftError('INVALID_FILE', `${what} ${shown} must be a file name of 1 to 1024 characters`);
  }
  if (rel.includes('\\') || rel.includes('\0') || rel.startsWith('/') || /^[a-z][a-z0-9+.-]*:/i.test(rel) || rel.split('/').some((p) => p === '..')) {
    throw new PeftError('INVALID_FILE', `${what} ${shown} leaves its folder (absolute path, URL, ".." or backslash); only names inside ${dir} are read`);
  }
  return joinPath(dir, rel);
}

/**
 * `fs.readFile` with a size limit that holds for any FileSystem (one that ignores `maxBytes` is
 * checked after the read), and every failure a PeftError naming the path.
 */
export async function readFileChecked(path: string, fs: FileSystem, maxBytes = Infinity, what = 'the size limit'): Promise<Uint8Array> {
  if (maxBytes <= 0) throw new PeftError('LIMIT_EXCEEDED', `${path}: not read: ${what} is used up`);
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path, Number.isFinite(maxBytes) ? { maxBytes } : undefined);
  } catch (e) {
    throw ioError(e, path, 'read it');
  }
  if (!(bytes instanceof Uint8Array)) throw new PeftError('IO_ERROR', `${path}: the file system returned no bytes`);
  if (bytes.byteLength > maxBytes) throw new PeftError('LIMIT_EXCEEDED', `${path}: ${bytes.byteLength} bytes exceeds ${what} (${maxBytes} bytes)`);
  return bytes;
}

/** Throws INVALID_FILE when `v` nests arrays/objects deeper than `max` (checked without recursion). */
export function checkJsonDepth(v: unknown, source: string, max = MAX_JSON_DEPTH): void {
  const stack: [unknown, number][] = [[v, 1]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    if (d > max) throw new PeftError('INVALID_FILE', `${source}: JSON nested more than ${max} levels deep`);
    for (const c of Array.isArray(x) ? x : Object.values(x)) if (c !== null && typeof c === 'object') stack.push([c, d + 1]);
  }
}

/** JSON.parse whose error names the file and the position only (a parser's message quotes the text). */
export function parseJsonText(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const pos = /position (\d+)/.exec(e instanceof Error ? e.message : '');
    throw new PeftError('INVALID_FILE', `${source}: invalid JSON${pos ? ` at position ${pos[1]}` : ''}`, { cause: e });
  }
}

let nodeFs: Promise<any> | undefined;
function fsp(): Promise<any> {
  return (nodeFs ??= dynamicImport('node:fs/promises'));
}

/** What writeFileAtomic puts between a file's name and its temp suffix (leftovers are found by it). */
export const TMP_MARK = '.tmp-';

/** Node's file system. */
export const nodeFileSystem: FileSystem = {
  async readFile(path, opts) {
    const fs = await fsp();
    let fh: any;
    try {
      // non-blocking: opening a FIFO must not wait for a writer (it is refused just below)
      fh = await fs.open(path, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
    } catch (e) {
      throw ioError(e, path, 'open it');
    }
    try {
      const st = await fh.stat();
      if (st.isDirectory()) throw new PeftError('INVALID_FILE', `${path}: is a folder, not a file`);
      if (!st.isFile()) throw new PeftError('INVALID_FILE', `${path}: not a regular file (a device, FIFO or socket); only regular files are read`);
      const max = opts?.maxBytes ?? Infinity;
      if (st.size > max) throw new PeftError('LIMIT_EXCEEDED', `${path}: ${st.size} bytes exceeds the limit of ${max} bytes`);
      let out: Uint8Array;
      try {
        out = new Uint8Array(st.size);
      } catch (e) {
        throw new PeftError('LIMIT_EXCEEDED', `${path}: ${st.size} bytes cannot be held in memory`, { cause: e });
      }
      let off = 0;
      while (off < out.byteLength) {
        const { bytesRead } = await fh.read(out, off, Math.min(out.byteLength - off, 1 << 30), off);
        if (bytesRead === 0) throw new PeftError('INVALID_FILE', `${path}: the file shrank while it was read`);
        off += bytesRead;
      }
      return out;
    } catch (e) {
      throw ioError(e, path, 'read it');
    } finally {
      await fh.close();
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
    const tmp = `${path}${TMP_MARK}${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    try {
      const fh = await fs.open(tmp, 'w');
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, path);
    } catch (e) {
      await fs.rm(tmp, { force: true }).catch(() => {});
      throw ioError(e, path, 'write it');
    }
  },
  async mkdirp(path) {
    try {
      await (await fsp()).mkdir(path, { recursive: true });
    } catch (e) {
      throw ioError(e, path, 'create the folder');
    }
  },
  async readdir(path) {
    try {
      return await (await fsp()).readdir(path);
    } catch (e) {
      throw ioError(e, path, 'list the folder');
    }
  },
  async remove(path) {
    try {
      await (await fsp()).rm(path, { recursive: true, force: true });
    } catch (e) {
      throw ioError(e, path, 'remove it');
    }
  },
  async rename(from, to) {
    try {
      await (await fsp()).rename(from, to);
    } catch (e) {
      throw ioError(e, from, `rename it to ${to}`);
    }
  },
};

/** Read-only access over fetch (a browser, or a model served over HTTP); `path` is a URL or relative to `base`. */
export function fetchFileSystem(base = ''): FileSystem {
  const url = (p: string) => (/^[a-z]+:\/\//i.test(p) || !base ? p : `${base.replace(/\/$/, '')}/${p}`);
  const readOnly = () => {
    throw new PeftError('UNSUPPORTED', 'this file system is read-only (fetch); write to opfsFileSystem(), indexedDbFileSystem() or memoryFileSystem() (pass it as fs), or download the adapter with adapterBlob()');
  };
  return {
    async readFile(path, opts) {
      const r = await fetch(url(path));
      if (r.status === 404) throw new PeftError('FILE_NOT_FOUND', `file not found: ${url(path)}`);
      if (!r.ok) throw new PeftError('INVALID_FILE', `${url(path)}: HTTP ${r.status}`);
      const max = opts?.maxBytes ?? Infinity;
      const len = Number(r.headers.get('content-length'));
      if (Number.isFinite(len) && len > max) throw new PeftError('LIMIT_EXCEEDED', `${url(path)}: ${len} bytes exceeds the limit of ${max} bytes`);
      const out = new Uint8Array(await r.arrayBuffer());
      if (out.byteLength > max) throw new PeftError('LIMIT_EXCEEDED', `${url(path)}: ${out.byteLength} bytes exceeds the limit of ${max} bytes`);
      return out;
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

/** A JSON file's bytes parsed as an object: size and nesting bounded, errors naming the file, never its text. */
export function parseJsonObject(bytes: Uint8Array, path: string): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (e) {
    throw new PeftError('INVALID_FILE', `${path}: not UTF-8 text`, { cause: e });
  }
  const v = parseJsonText(text, path);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new PeftError('INVALID_FILE', `${path}: invalid JSON (not a JSON object)`);
  checkJsonDepth(v, path);
  return v as Record<string, unknown>;
}

export async function readJson(path: string, fs: FileSystem = getFileSystem()): Promise<Record<string, unknown>> {
  return parseJsonObject(await readFileChecked(path, fs, MAX_JSON_BYTES, 'the JSON size limit'), path);
}

/** JSON as HF writes it: keys sorted, indent 2. */
export function stableJson(value: unknown): string {
  checkJsonDepth(value, 'stableJson', MAX_JSON_DEPTH + 4);
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value), null, 2) + '\n';
}
