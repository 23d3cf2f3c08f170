import { PeftError } from '../errors';
import type { FileSystem } from './fs';

/**
 * A FileSystem over a key-value store of entries keyed by normalized path: one tree logic, two stores —
 * a Map (`memoryFileSystem`: tests, a Web Worker's scratch space, an adapter to download) and IndexedDB
 * (`indexedDbFileSystem`: kept across page loads). Folders are entries of their own, so a missing
 * parent, a file where a folder is wanted and a folder where a file is wanted fail as they do on disk.
 * Each write, remove and rename is one batch, applied all at once by the store (one IndexedDB
 * transaction), so writeFileAtomic and rename are atomic here as on a real file system.
 */
export type KvEntry = { kind: 'dir' } | { kind: 'file'; data: Uint8Array };

export interface KvStore {
  /** Where the store lives, for error messages ("memory", "IndexedDB peftjs"). */
  readonly label: string;
  get(key: string): Promise<KvEntry | undefined>;
  /** Every entry whose key starts with `prefix` (a folder's whole subtree: prefix ends with '/'). */
  list(prefix: string): Promise<[string, KvEntry][]>;
  /** Applies the puts and deletes at once: either all or none. */
  batch(ops: ({ put: string; entry: KvEntry } | { del: string })[]): Promise<void>;
}

/** 'a//b/./c/' → 'a/b/c'; '', '.', '/' → '' (the root). Refuses '..' (a key store has no parent of its root). */
export function normalizeKey(path: string, what = 'path'): string {
  if (typeof path !== 'string') throw new PeftError('INVALID_ARGUMENT', `${what} must be a string, got ${typeof path}`);
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new PeftError('INVALID_ARGUMENT', `${what} ${JSON.stringify(path)}: ".." is not supported by this file system`);
  return parts.join('/');
}

const parentKey = (key: string): string => (key.includes('/') ? key.slice(0, key.lastIndexOf('/')) : '');
const under = (key: string): string => (key === '' ? '' : `${key}/`);

export function kvFileSystem(store: KvStore): FileSystem {
  const at = (path: string) => (store.label ? `${path} (${store.label})` : path);
  const entry = async (key: string): Promise<KvEntry | undefined> => (key === '' ? { kind: 'dir' } : store.get(key));
  const needDir = async (key: string, path: string): Promise<void> => {
    const e = await entry(key);
    if (!e) throw new PeftError('FILE_NOT_FOUND', `${at(path)}: folder ${key || '/'} does not exist`);
    if (e.kind !== 'dir') throw new PeftError('FILE_NOT_FOUND', `${at(path)}: a part of this path (${key}) is a file, not a folder`);
  };
  const toBytes = (data: Uint8Array | string): Uint8Array => (typeof data === 'string' ? new TextEncoder().encode(data) : data.slice());
  return {
    async readFile(path, opts) {
      const e = await entry(normalizeKey(path));
      if (!e) throw new PeftError('FILE_NOT_FOUND', `file not found: ${at(path)}`);
      if (e.kind === 'dir') throw new PeftError('INVALID_FILE', `${at(path)}: is a folder, not a file`);
      const max = opts?.maxBytes ?? Infinity;
      if (e.data.byteLength > max) throw new PeftError('LIMIT_EXCEEDED', `${at(path)}: ${e.data.byteLength} bytes exceeds the limit of ${max} bytes`);
      return e.data.slice(); // the caller may write into it; the stored bytes stay as written
    },
    async exists(path) {
      return (await entry(normalizeKey(path))) !== undefined;
    },
    async writeFileAtomic(path, data) {
      const key = normalizeKey(path);
      if (key === '') throw new PeftError('INVALID_ARGUMENT', `${at(path)}: not a file name`);
      await needDir(parentKey(key), path);
      if ((await entry(key))?.kind === 'dir') throw new PeftError('INVALID_FILE', `${at(path)}: is a folder, not a file`);
      await store.batch([{ put: key, entry: { kind: 'file', data: toBytes(data) } }]);
    },
    async mkdirp(path) {
      const parts = normalizeKey(path).split('/').filter(Boolean);
      const ops: { put: string; entry: KvEntry }[] = [];
      for (let i = 1; i <= parts.length; i++) {
        const key = parts.slice(0, i).join('/');
        const e = await entry(key);
        if (e?.kind === 'file') throw new PeftError('FILE_NOT_FOUND', `${at(path)}: cannot create the folder: ${key} is a file`);
        if (!e) ops.push({ put: key, entry: { kind: 'dir' } });
      }
      if (ops.length) await store.batch(ops);
    },
    async readdir(path) {
      const key = normalizeKey(path);
      const e = await entry(key);
      if (!e) throw new PeftError('FILE_NOT_FOUND', `file not found: ${at(path)}`);
      if (e.kind !== 'dir') throw new PeftError('FILE_NOT_FOUND', `${at(path)}: is a file, not a folder`);
      const p = under(key);
      const names = new Set<string>();
      for (const [k] of await store.list(p)) names.add(k.slice(p.length).split('/')[0]);
      return [...names].sort();
    },
    async remove(path) {
      const key = normalizeKey(path);
      const ops: { del: string }[] = (await store.list(under(key))).map(([k]) => ({ del: k }));
      if (key !== '' && (await store.get(key))) ops.push({ del: key });
      if (ops.length) await store.batch(ops);
    },
    async rename(from, to) {
      const a = normalizeKey(from, 'rename: from');
      const b = normalizeKey(to, 'rename: to');
      const src = a === '' ? undefined : await store.get(a);
      if (!src) throw new PeftError('FILE_NOT_FOUND', `file not found: ${at(from)} (renaming it to ${to})`);
      if (a === b) return;
      if (b === '' || b.startsWith(`${a}/`)) throw new PeftError('INVALID_ARGUMENT', `${at(from)}: cannot move a folder into itself (${to})`);
      await needDir(parentKey(b), to);
      const dst = await store.get(b);
      const ops: ({ put: string; entry: KvEntry } | { del: string })[] = [];
      if (dst?.kind === 'dir') {
        if (src.kind === 'file') throw new PeftError('INVALID_FILE', `${at(to)}: is a folder; cannot replace it by the file ${from}`);
        if ((await store.list(under(b))).length) throw new PeftError('IO_ERROR', `${at(to)}: cannot rename ${from} onto a folder that is not empty`);
      } else if (dst && src.kind === 'dir') throw new PeftError('INVALID_FILE', `${at(to)}: is a file; cannot replace it by the folder ${from}`);
      ops.push({ del: a }, { put: b, entry: src });
      if (src.kind === 'dir') {
        for (const [k, e] of await store.list(under(a))) ops.push({ del: k }, { put: `${b}/${k.slice(a.length + 1)}`, entry: e });
      }
      await store.batch(ops);
    },
  };
}

/** A FileSystem that keeps everything in memory; `snapshot()` returns every file's bytes by path. */
export interface MemoryFileSystem extends FileSystem {
  /** Every file (not folder) by normalized path, sorted: what a run wrote, to download or compare. */
  snapshot(): Map<string, Uint8Array>;
}

/**
 * An in-memory FileSystem: what the Trainer and savePretrained write when there is no disk (a browser
 * tab, a Web Worker, a test). `files` seeds it ("dir/file.json" → bytes or text); their folders are made.
 */
export function memoryFileSystem(files: Record<string, Uint8Array | string> = {}): MemoryFileSystem {
  const map = new Map<string, KvEntry>();
  const store: KvStore = {
    label: '',
    async get(key) {
      return map.get(key);
    },
    async list(prefix) {
      return [...map].filter(([k]) => k.startsWith(prefix));
    },
    async batch(ops) {
      for (const op of ops) if ('del' in op) map.delete(op.del);
      for (const op of ops) if ('put' in op) map.set(op.put, op.entry);
    },
  };
  for (const [path, data] of Object.entries(files)) {
    const key = normalizeKey(path, 'memoryFileSystem: file name');
    const parts = key.split('/');
    for (let i = 1; i < parts.length; i++) map.set(parts.slice(0, i).join('/'), { kind: 'dir' });
    map.set(key, { kind: 'file', data: typeof data === 'string' ? new TextEncoder().encode(data) : data.slice() });
  }
  const fs = kvFileSystem(store);
  return {
    ...fs,
    snapshot() {
      const out = new Map<string, Uint8Array>();
      for (const k of [...map.keys()].sort()) {
        const e = map.get(k)!;
        if (e.kind === 'file') out.set(k, e.data.slice());
      }
      return out;
    },
  };
}

const idbRequest = <T>(r: IDBRequest<T>): Promise<T> =>
  new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });

/**
 * A FileSystem in IndexedDB (browser main thread or Web Worker): survives reloads, each write and
 * rename one transaction. `dbName` is the database (one object store, `files`).
 */
export function indexedDbFileSystem(dbName = 'peftjs'): FileSystem {
  const idb = (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  if (!idb) throw new PeftError('UNSUPPORTED', `indexedDbFileSystem(${JSON.stringify(dbName)}): IndexedDB is not available here (a browser or Web Worker has it; Node does not)`);
  let db: Promise<IDBDatabase> | undefined;
  const open = () =>
    (db ??= new Promise<IDBDatabase>((resolve, reject) => {
      const r = idb.open(dbName, 1);
      r.onupgradeneeded = () => r.result.createObjectStore('files');
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(new PeftError('IO_ERROR', `IndexedDB ${dbName}: cannot open it (${r.error?.name ?? 'error'})`, { cause: r.error }));
      r.onblocked = () => reject(new PeftError('IO_ERROR', `IndexedDB ${dbName}: blocked by another tab holding an older version open`));
    }));
  const tx = async (mode: IDBTransactionMode) => (await open()).transaction('files', mode).objectStore('files');
  const fail = (e: unknown, what: string): never => {
    if (PeftError.isInstance(e)) throw e;
    const name = (e as { name?: string } | null)?.name ?? 'error';
    throw new PeftError('IO_ERROR', `IndexedDB ${dbName}: cannot ${what} (${name === 'QuotaExceededError' ? 'the storage quota is used up' : name})`, { cause: e });
  };
  const store: KvStore = {
    label: `IndexedDB ${dbName}`,
    async get(key) {
      try {
        return (await idbRequest((await tx('readonly')).get(key))) as KvEntry | undefined;
      } catch (e) {
        return fail(e, `read ${key}`);
      }
    },
    async list(prefix) {
      try {
        const s = await tx('readonly');
        const range = prefix === '' ? undefined : IDBKeyRange.bound(prefix, `${prefix}\uffff`);
        const [keys, values] = await Promise.all([idbRequest(s.getAllKeys(range)), idbRequest(s.getAll(range))]);
        return keys.map((k, i) => [String(k), values[i] as KvEntry]);
      } catch (e) {
        return fail(e, `list ${prefix || '/'}`);
      }
    },
    async batch(ops) {
      try {
        const s = await tx('readwrite');
        for (const op of ops) if ('del' in op) s.delete(op.del);
        for (const op of ops) if ('put' in op) s.put(op.entry, op.put);
        await new Promise<void>((resolve, reject) => {
          s.transaction.oncomplete = () => resolve();
          s.transaction.onerror = () => reject(s.transaction.error);
          s.transaction.onabort = () => reject(s.transaction.error);
        });
      } catch (e) {
        fail(e, 'write');
      }
    },
  };
  return kvFileSystem(store);
}
