// Helpers shared by this package's tests (not part of the public surface).
import * as tf from '@tensorflow/tfjs';
import { readdirSync, readFileSync } from 'node:fs';
import { PeftError, type FileSystem } from '@peftjs/core';

/** A read-only in-memory file system over `files` (path → bytes), for tests that corrupt a model folder. */
export function memoryFs(files: Map<string, Uint8Array>): FileSystem {
  const ro = () => {
    throw new Error('read-only test file system');
  };
  return {
    async readFile(path) {
      const b = files.get(path);
      if (!b) throw new PeftError('FILE_NOT_FOUND', `file not found: ${path}`);
      return b;
    },
    async exists(path) {
      return files.has(path);
    },
    writeFileAtomic: ro,
    mkdirp: ro,
    readdir: async (dir) => [...files.keys()].filter((p) => p.startsWith(dir.replace(/\/?$/, '/'))).map((p) => p.slice(dir.replace(/\/?$/, '/').length)),
    remove: ro,
    rename: ro,
  };
}

/** The files of `dir` loaded under `/mem/<name>/`. */
export function folderInMemory(dir: string, name = 'model'): { files: Map<string, Uint8Array>; dir: string } {
  const files = new Map<string, Uint8Array>();
  for (const f of readdirSync(dir)) files.set(`/mem/${name}/${f}`, new Uint8Array(readFileSync(`${dir.replace(/\/?$/, '/')}${f}`)));
  return { files, dir: `/mem/${name}` };
}

export function editJson(files: Map<string, Uint8Array>, path: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(new TextDecoder().decode(files.get(path)));
  edit(j);
  files.set(path, new TextEncoder().encode(JSON.stringify(j)));
}

/** Nested arrays of a tensor (awaited). */
export async function arr<T = number[][]>(t: tf.Tensor): Promise<T> {
  return (await t.array()) as T;
}

/** Max |a - b| over all elements. */
export async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}
