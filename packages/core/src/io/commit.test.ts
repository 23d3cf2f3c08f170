// All-or-nothing folder commits (issue 14, torn saves): a writer stopped at every possible step leaves a
// folder that reads as exactly the old files or exactly the new ones, and the next commit cleans up.
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type FileSystem, nodeFileSystem } from './fs';
import { COMMIT_JOURNAL, commitFiles, committedView, recoverFolder } from './commit';

class Killed extends Error {}

/** nodeFileSystem that "dies" (throws, and refuses everything after) at its `at`-th mutating call. */
function dying(at: number): FileSystem & { calls: number } {
  let calls = 0;
  let dead = false;
  const step = () => {
    if (dead || calls++ === at) {
      dead = true;
      throw new Killed();
    }
  };
  const fs = nodeFileSystem;
  return {
    get calls() {
      return calls;
    },
    readFile: (p, o) => fs.readFile(p, o),
    exists: (p) => fs.exists(p),
    readdir: (p) => fs.readdir(p),
    async writeFileAtomic(p, d) {
      step();
      return fs.writeFileAtomic(p, d);
    },
    async mkdirp(p) {
      step();
      return fs.mkdirp(p);
    },
    async remove(p) {
      step();
      return fs.remove(p);
    },
    async rename(a, b) {
      step();
      return fs.rename(a, b);
    },
  };
}

async function read(dir: string): Promise<Record<string, string | null>> {
  const v = await committedView(nodeFileSystem, dir);
  const out: Record<string, string | null> = {};
  for (const n of ['a.json', 'b.bin', 'c.bin']) {
    const p = await v.path(n);
    out[n] = p ? readFileSync(p, 'utf8') : null;
  }
  return out;
}

describe('commitFiles', () => {
  const OLD = { 'a.json': 'old-a', 'b.bin': 'old-b', 'c.bin': 'old-c' };
  const NEW = { 'a.json': 'new-a', 'b.bin': 'new-b', 'c.bin': null };

  it('a writer killed at any step leaves exactly the old or exactly the new files; the next commit cleans up', async () => {
    let sawOld = 0;
    let sawNew = 0;
    for (let at = 0; ; at++) {
      const dir = mkdtempSync(join(tmpdir(), 'peftjs-commit-'));
      for (const [n, v] of Object.entries(OLD)) writeFileSync(join(dir, n), v);
      writeFileSync(join(dir, 'user-notes.txt'), 'mine');
      const fs = dying(at);
      let finished = true;
      try {
        await commitFiles(fs, dir, { 'a.json': 'new-a', 'b.bin': 'new-b' }, ['c.bin']);
      } catch (e) {
        if (!(e instanceof Killed)) throw e;
        finished = false;
      }
      const seen = await read(dir);
      if (JSON.stringify(seen) === JSON.stringify(OLD)) sawOld++;
      else if (JSON.stringify(seen) === JSON.stringify(NEW)) sawNew++;
      else throw new Error(`killed at step ${at}: a mix ${JSON.stringify(seen)}`);
      // the next save (or a recovery) leaves no journal, staging folder or temp file, and keeps the user's file
      await recoverFolder(nodeFileSystem, dir);
      expect(await read(dir)).toEqual(seen);
      expect(readdirSync(dir).sort()).toEqual([...Object.keys(seen).filter((k) => seen[k] !== null), 'user-notes.txt'].sort());
      expect(readFileSync(join(dir, 'user-notes.txt'), 'utf8')).toBe('mine');
      if (finished) break;
    }
    expect(sawOld).toBeGreaterThan(0);
    expect(sawNew).toBeGreaterThan(1);
  });

  it('removes orphaned writeFileAtomic temp files and staging folders, and nothing else', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-commit-'));
    writeFileSync(join(dir, 'adapter_model.safetensors.tmp-m1abc2-x9y8z7'), 'partial');
    await nodeFileSystem.mkdirp(join(dir, '.peftjs-staging-abc-123'));
    writeFileSync(join(dir, 'notes.tmp-keep.txt'), 'mine');
    writeFileSync(join(dir, 'backup.tmp-20240101-01'), 'mine too'); // looks like a temp name, but not of a peftjs file
    await commitFiles(nodeFileSystem, dir, { 'a.json': 'x' });
    expect(readdirSync(dir).sort()).toEqual(['a.json', 'backup.tmp-20240101-01', 'notes.tmp-keep.txt']);
    expect(existsSync(join(dir, COMMIT_JOURNAL))).toBe(false);
  });
});
