import { PeftError, type FileSystem } from '@peftjs/core';

const norm = (p: string) => {
  const s = p.replace(/\/{2,}/g, '/').replace(/\/$/, '');
  return s === '' ? '/' : s;
};
const parent = (p: string) => {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
};

/**
 * A FileSystem held in memory (files and directories), for saving and loading adapters in tests without
 * touching the disk and on any platform. `files` exposes what was written, by normalized path.
 */
export function memoryFileSystem(): FileSystem & { readonly files: ReadonlyMap<string, Uint8Array> } {
  const files = new Map<string, Uint8Array>();
  const dirs = new Set<string>(['/']);
  const mkdirp = (path: string) => {
    for (let p = norm(path); !dirs.has(p); p = parent(p)) dirs.add(p);
  };
  const under = (dir: string, p: string) => p.startsWith(dir === '/' ? '/' : `${dir}/`);
  const missing = (path: string) => new PeftError('FILE_NOT_FOUND', `file not found: ${path}`);
  return {
    files,
    async readFile(path, opts) {
      const p = norm(path);
      const b = files.get(p);
      if (!b) throw dirs.has(p) ? new PeftError('INVALID_FILE', `${path} is a directory, not a file`) : missing(path);
      if (opts?.maxBytes !== undefined && b.byteLength > opts.maxBytes) {
        throw new PeftError('LIMIT_EXCEEDED', `${path}: ${b.byteLength} bytes is more than maxBytes ${opts.maxBytes}`);
      }
      return b.slice();
    },
    async exists(path) {
      const p = norm(path);
      return files.has(p) || dirs.has(p);
    },
    async writeFileAtomic(path, data) {
      const p = norm(path);
      if (dirs.has(p)) throw new PeftError('INVALID_FILE', `${path} is a directory`);
      mkdirp(parent(p));
      files.set(p, typeof data === 'string' ? new TextEncoder().encode(data) : data.slice());
    },
    async mkdirp(path) {
      const p = norm(path);
      if (files.has(p)) throw new PeftError('INVALID_FILE', `${path} is a file`);
      mkdirp(p);
    },
    async readdir(path) {
      const d = norm(path);
      if (!dirs.has(d)) throw missing(path);
      const names = new Set<string>();
      for (const p of [...files.keys(), ...dirs]) if (p !== d && under(d, p) && parent(p) === d) names.add(p.slice(d === '/' ? 1 : d.length + 1));
      return [...names].sort();
    },
    async remove(path) {
      const p = norm(path);
      files.delete(p);
      if (!dirs.has(p)) return;
      for (const f of [...files.keys()]) if (under(p, f)) files.delete(f);
      for (const x of [...dirs]) if (x === p || under(p, x)) dirs.delete(x);
    },
    async rename(from, to) {
      const a = norm(from);
      const b = norm(to);
      if (files.has(a)) {
        mkdirp(parent(b));
        files.set(b, files.get(a)!);
        files.delete(a);
        return;
      }
      if (!dirs.has(a)) throw missing(from);
      mkdirp(parent(b));
      for (const x of [...dirs]) if (x === a || under(a, x)) {
        dirs.delete(x);
        dirs.add(b + x.slice(a.length));
      }
      for (const [f, v] of [...files]) if (under(a, f)) {
        files.delete(f);
        files.set(b + f.slice(a.length), v);
      }
    },
  };
}
