// One scenario of every FileSystem operation, its outcomes recorded: each FileSystem must give what
// Node's fs gives. Run on the memory file system in Node (packages/core/src/io/kv_fs.test.ts) and on OPFS
// and IndexedDB in headless Chromium (examples/browser/browser.test.ts). No Node built-in here.
import { PeftError, type FileSystem } from '@peftjs/core';

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return PeftError.isInstance(e) ? e.code : `not a PeftError: ${(e as Error).message}`;
  }
};

export async function fsScenario(fs: FileSystem, root: string): Promise<unknown[]> {
  const p = (s: string) => (s ? `${root}/${s}` : root);
  const log: unknown[] = [];
  log.push(await fs.exists(p('a')));
  log.push('write without parent', await code(fs.writeFileAtomic(p('a/b/c.txt'), 'x')));
  await fs.mkdirp(p('a/b'));
  await fs.mkdirp(p('a/b')); // again: no error
  await fs.writeFileAtomic(p('a/b/c.txt'), 'hello');
  await fs.writeFileAtomic(p('a/b/c.txt'), 'hello again'); // replaces
  await fs.writeFileAtomic(p('a/d.bin'), new Uint8Array([1, 2, 3]));
  log.push(text(await fs.readFile(p('a/b/c.txt'))), [...(await fs.readFile(p('a/d.bin')))]);
  log.push(await fs.readdir(p('a')), await fs.readdir(p('a/b')));
  log.push('limit', await code(fs.readFile(p('a/b/c.txt'), { maxBytes: 4 })));
  log.push('missing', await code(fs.readFile(p('a/nope'))));
  log.push('folder as file', await code(fs.readFile(p('a/b'))));
  log.push('list a file', await code(fs.readdir(p('a/d.bin'))));
  log.push('mkdir over a file', await code(fs.mkdirp(p('a/d.bin/e'))));
  // rename a file, then a folder with contents
  await fs.rename(p('a/d.bin'), p('a/e.bin'));
  log.push(await fs.exists(p('a/d.bin')), [...(await fs.readFile(p('a/e.bin')))]);
  await fs.rename(p('a/b'), p('a/f'));
  log.push(await fs.exists(p('a/b')), text(await fs.readFile(p('a/f/c.txt'))), await fs.readdir(p('a')));
  log.push('rename missing', await code(fs.rename(p('a/zz'), p('a/yy'))));
  // a file replaces a file
  await fs.writeFileAtomic(p('a/g.txt'), 'g');
  await fs.rename(p('a/g.txt'), p('a/e.bin'));
  log.push(text(await fs.readFile(p('a/e.bin'))));
  await fs.remove(p('a/f'));
  await fs.remove(p('a/f')); // again: like rm -f
  log.push(await fs.exists(p('a/f')), await fs.readdir(p('a')));
  // the bytes returned are the caller's: writing into them changes nothing stored
  const got = await fs.readFile(p('a/e.bin'));
  got[0] = 0;
  log.push(text(await fs.readFile(p('a/e.bin'))));
  return log;
}

