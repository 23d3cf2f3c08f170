import { PeftError } from '../errors';
import type { FileSystem } from './fs';
import { normalizeKey } from './kv_fs';

/* The Origin Private File System's handle types, as far as used here (lib.dom lacks some of them). */
interface DirHandle {
  kind: 'directory';
  name: string;
  getDirectoryHandle(name: string, opts?: { create?: boolean }): Promise<DirHandle>;
  getFileHandle(name: string, opts?: { create?: boolean }): Promise<FileHandle>;
  removeEntry(name: string, opts?: { recursive?: boolean }): Promise<void>;
  entries(): AsyncIterableIterator<[string, DirHandle | FileHandle]>;
}
interface FileHandle {
  kind: 'file';
  name: string;
  getFile(): Promise<Blob>;
  createWritable?(opts?: { keepExistingData?: boolean }): Promise<{ write(d: BufferSource | string): Promise<void>; close(): Promise<void>; abort(): Promise<void> }>;
  createSyncAccessHandle?(): Promise<{ write(d: BufferSource, o?: { at: number }): number; truncate(n: number): void; flush(): void; close(): void }>;
  move?(parent: DirHandle, name: string): Promise<void>;
}

/**
 * A FileSystem on the Origin Private File System (`navigator.storage.getDirectory()`, or the folder
 * handle `root`): persistent, fast, in the main thread and in Web Workers. Writes go through
 * `createWritable`, whose data only replaces the file when the stream closes (atomic), or, in a Worker
 * without it (Safari), a sync access handle on a temp file moved into place. A file is renamed with the
 * handle's `move`; a folder (the Trainer's checkpoint rename) is copied and the old one removed,
 * since OPFS has no folder rename everywhere.
 */
export function opfsFileSystem(root?: unknown): FileSystem {
  let top: Promise<DirHandle> | undefined;
  const getRoot = (): Promise<DirHandle> =>
    (top ??= (async () => {
      if (root) return (await root) as DirHandle;
      const storage = (globalThis as unknown as { navigator?: { storage?: { getDirectory?: () => Promise<DirHandle> } } }).navigator?.storage;
      if (!storage?.getDirectory) throw new PeftError('UNSUPPORTED', 'opfsFileSystem: the Origin Private File System is not available here (navigator.storage.getDirectory is missing; a secure context — https or localhost — is needed)');
      return storage.getDirectory();
    })());

  const fail = (e: unknown, path: string, what: string): never => {
    if (PeftError.isInstance(e)) throw e;
    const name = (e as { name?: string } | null)?.name;
    if (name === 'NotFoundError') throw new PeftError('FILE_NOT_FOUND', `file not found: ${path} (OPFS)`, { cause: e });
    if (name === 'TypeMismatchError') throw new PeftError('FILE_NOT_FOUND', `${path} (OPFS): a part of this path is a file, not a folder`, { cause: e });
    if (name === 'QuotaExceededError') throw new PeftError('IO_ERROR', `${path} (OPFS): cannot ${what}: the storage quota is used up`, { cause: e });
    throw new PeftError('IO_ERROR', `${path} (OPFS): cannot ${what} (${name ?? 'error'})`, { cause: e });
  };
  /** The folder handle of `parts` (created with `create`). */
  const dirOf = async (parts: string[], create = false): Promise<DirHandle> => {
    let d = await getRoot();
    for (const p of parts) d = await d.getDirectoryHandle(p, { create });
    return d;
  };
  const split = (path: string) => {
    const parts = normalizeKey(path).split('/').filter(Boolean);
    return { parts, dir: parts.slice(0, -1), name: parts[parts.length - 1] };
  };
  /** The handle at `path`, or undefined when nothing is there. */
  const handleAt = async (path: string): Promise<DirHandle | FileHandle | undefined> => {
    const { dir, name } = split(path);
    if (name === undefined) return getRoot();
    let parent: DirHandle;
    try {
      parent = await dirOf(dir);
    } catch (e) {
      const n = (e as { name?: string }).name;
      if (n === 'NotFoundError' || n === 'TypeMismatchError') return undefined;
      throw e;
    }
    for (const get of [() => parent.getFileHandle(name), () => parent.getDirectoryHandle(name)]) {
      try {
        return await get();
      } catch (e) {
        const n = (e as { name?: string }).name;
        if (n !== 'NotFoundError' && n !== 'TypeMismatchError') throw e;
      }
    }
    return undefined;
  };
  const writeInto = async (parent: DirHandle, name: string, bytes: Uint8Array): Promise<void> => {
    const fh = await parent.getFileHandle(name, { create: true });
    if (fh.createWritable) {
      const w = await fh.createWritable({ keepExistingData: false });
      try {
        await w.write(bytes as Uint8Array<ArrayBuffer>);
        await w.close();
      } catch (e) {
        await w.abort().catch(() => undefined);
        throw e;
      }
      return;
    }
    if (!fh.createSyncAccessHandle || !fh.move) throw new PeftError('UNSUPPORTED', `${name} (OPFS): this browser can write OPFS files neither by createWritable nor by a sync access handle`);
    const tmpName = `${name}.tmp-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const tmp = await parent.getFileHandle(tmpName, { create: true });
    const h = await tmp.createSyncAccessHandle!();
    try {
      h.truncate(0);
      h.write(bytes as Uint8Array<ArrayBuffer>, { at: 0 });
      h.flush();
    } finally {
      h.close();
    }
    await parent.removeEntry(name).catch(() => undefined);
    await tmp.move!(parent, name);
  };
  const copyDir = async (from: DirHandle, to: DirHandle): Promise<void> => {
    for await (const [name, h] of from.entries()) {
      if (h.kind === 'directory') await copyDir(h, await to.getDirectoryHandle(name, { create: true }));
      else await writeInto(to, name, new Uint8Array(await (await h.getFile()).arrayBuffer()));
    }
  };

  return {
    async readFile(path, opts) {
      const h = await handleAt(path).catch((e) => fail(e, path, 'read it'));
      if (!h) throw new PeftError('FILE_NOT_FOUND', `file not found: ${path} (OPFS)`);
      if (h.kind === 'directory') throw new PeftError('INVALID_FILE', `${path} (OPFS): is a folder, not a file`);
      try {
        const file = await h.getFile();
        const max = opts?.maxBytes ?? Infinity;
        if (file.size > max) throw new PeftError('LIMIT_EXCEEDED', `${path} (OPFS): ${file.size} bytes exceeds the limit of ${max} bytes`);
        return new Uint8Array(await file.arrayBuffer());
      } catch (e) {
        return fail(e, path, 'read it');
      }
    },
    async exists(path) {
      return (await handleAt(path).catch(() => undefined)) !== undefined;
    },
    async writeFileAtomic(path, data) {
      const { dir, name } = split(path);
      if (name === undefined) throw new PeftError('INVALID_ARGUMENT', `${path} (OPFS): not a file name`);
      try {
        await writeInto(await dirOf(dir), name, typeof data === 'string' ? new TextEncoder().encode(data) : data);
      } catch (e) {
        fail(e, path, 'write it');
      }
    },
    async mkdirp(path) {
      try {
        await dirOf(split(path).parts, true);
      } catch (e) {
        fail(e, path, 'create the folder');
      }
    },
    async readdir(path) {
      const h = await handleAt(path).catch((e) => fail(e, path, 'list the folder'));
      if (!h) throw new PeftError('FILE_NOT_FOUND', `file not found: ${path} (OPFS)`);
      if (h.kind !== 'directory') throw new PeftError('FILE_NOT_FOUND', `${path} (OPFS): is a file, not a folder`);
      const names: string[] = [];
      for await (const [name] of h.entries()) names.push(name);
      return names.sort();
    },
    async remove(path) {
      const { dir, name } = split(path);
      try {
        if (name === undefined) {
          const r = await getRoot();
          for await (const [n] of r.entries()) await r.removeEntry(n, { recursive: true });
          return;
        }
        await (await dirOf(dir)).removeEntry(name, { recursive: true });
      } catch (e) {
        const n = (e as { name?: string }).name;
        if (n === 'NotFoundError') return; // like rm -f
        fail(e, path, 'remove it');
      }
    },
    async rename(from, to) {
      const src = await handleAt(from).catch((e) => fail(e, from, `rename it to ${to}`));
      if (!src) throw new PeftError('FILE_NOT_FOUND', `file not found: ${from} (OPFS; renaming it to ${to})`);
      const a = normalizeKey(from);
      const b = normalizeKey(to);
      if (a === b) return;
      if (b === '' || b.startsWith(`${a}/`)) throw new PeftError('INVALID_ARGUMENT', `${from} (OPFS): cannot move a folder into itself (${to})`);
      const { dir, name } = split(to);
      try {
        const parent = await dirOf(dir);
        const dst = await handleAt(to);
        if (src.kind === 'file') {
          if (dst?.kind === 'directory') throw new PeftError('INVALID_FILE', `${to} (OPFS): is a folder; cannot replace it by the file ${from}`);
          if (src.move) {
            await src.move(parent, name!);
            return;
          }
          await writeInto(parent, name!, new Uint8Array(await (await src.getFile()).arrayBuffer()));
        } else {
          if (dst?.kind === 'file') throw new PeftError('INVALID_FILE', `${to} (OPFS): is a file; cannot replace it by the folder ${from}`);
          if (dst) {
            for await (const _ of (dst as DirHandle).entries()) throw new PeftError('IO_ERROR', `${to} (OPFS): cannot rename ${from} onto a folder that is not empty`);
          }
          await copyDir(src, await parent.getDirectoryHandle(name!, { create: true }));
        }
        const s = split(from);
        await (await dirOf(s.dir)).removeEntry(s.name!, { recursive: true });
      } catch (e) {
        fail(e, from, `rename it to ${to}`);
      }
    },
  };
}
