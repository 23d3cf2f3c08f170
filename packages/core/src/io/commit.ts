import { PeftError } from '../errors';
import { type FileSystem, TMP_MARK, joinPath, parseJsonObject, readFileChecked } from './fs';

/**
 * All-or-nothing writes of a set of files into a folder that may hold other things (the default
 * adapter lives in the output folder itself, beside the other adapters' subfolders), so the folder
 * cannot simply be swapped.
 *
 * 1. every new file is written (fsynced) into a staging folder `dir/.peftjs-staging-<id>/`;
 * 2. the commit point: a journal `dir/.peftjs-commit.json` naming the staging folder, the files and
 *    the files the new version no longer has, is written atomically;
 * 3. the files are renamed into place one by one, the stale ones removed, then the journal and the
 *    staging folder are removed.
 *
 * A reader (`committedView`) that finds a journal reads each named file from the staging folder while
 * it is still there (else from `dir`, where it was already moved) and treats the removed ones as
 * absent; without a journal it reads `dir`. So a process killed at any moment leaves a folder that
 * reads as exactly the old version (killed before step 2) or exactly the new one (after). The next
 * commit (`recoverFolder`) finishes an interrupted one and removes orphaned staging folders and
 * writeFileAtomic temp files.
 */
export const COMMIT_JOURNAL = '.peftjs-commit.json';
export const STAGING_PREFIX = '.peftjs-staging-';
const STAGING_RE = /^\.peftjs-staging-[a-z0-9-]{1,40}$/;
const FILE_RE = /^[A-Za-z0-9_.-]{1,200}$/;
/**
 * writeFileAtomic's temp names `<file>.tmp-<time>-<random>`, for the files peftjs itself writes only
 * (a user's `backup.tmp-2024-01` is never touched).
 */
const PEFTJS_FILES = [
  'adapter_model.safetensors', 'adapter_config.json', 'peftjs_prompt_encoder.safetensors', COMMIT_JOURNAL,
  'model.safetensors', 'config.json', 'metrics.jsonl', 'trainer_state.json', 'training_args.json',
  'optimizer.safetensors', 'scheduler.json', 'rng_state.json', 'trainable_params.safetensors',
];
const TMP_RE = new RegExp(`^(${PEFTJS_FILES.map((f) => f.replace(/\./g, '\\.')).join('|')})${TMP_MARK.replace('.', '\\.')}[a-z0-9]{1,12}-[a-z0-9]{1,8}$`);

interface Journal {
  staging: string;
  files: string[];
  remove: string[];
}

function checkName(name: string, what: string): void {
  if (!FILE_RE.test(name) || name === '.' || name === '..') throw new PeftError('INVALID_ARGUMENT', `${what}: ${JSON.stringify(name.slice(0, 80))} is not a plain file name`);
}

async function readJournal(fs: FileSystem, dir: string): Promise<Journal | null> {
  const path = joinPath(dir, COMMIT_JOURNAL);
  if (!(await fs.exists(path))) return null;
  const j = parseJsonObject(await readFileChecked(path, fs, 1 << 20, 'the journal size limit'), path);
  const list = (v: unknown) => Array.isArray(v) && v.length <= 64 && v.every((x) => typeof x === 'string' && FILE_RE.test(x) && x !== '..');
  if (typeof j.staging !== 'string' || !STAGING_RE.test(j.staging) || !list(j.files) || !list(j.remove)) {
    throw new PeftError('INVALID_FILE', `${path}: not a peftjs commit journal (fields "staging", "files", "remove")`);
  }
  return { staging: j.staging, files: j.files as string[], remove: j.remove as string[] };
}

async function rollForward(fs: FileSystem, dir: string, j: Journal): Promise<void> {
  for (const name of j.files) {
    const from = joinPath(dir, j.staging, name);
    if (await fs.exists(from)) await fs.rename(from, joinPath(dir, name));
  }
  for (const name of j.remove) if (await fs.exists(joinPath(dir, name))) await fs.remove(joinPath(dir, name));
  await fs.remove(joinPath(dir, COMMIT_JOURNAL));
  await fs.remove(joinPath(dir, j.staging));
}

/**
 * Finishes a commit a killed process left half done, then removes orphaned staging folders and
 * writeFileAtomic temp files in `dir` (only names peftjs itself makes). Needs a writable file system.
 */
export async function recoverFolder(fs: FileSystem, dir: string): Promise<void> {
  if (!(await fs.exists(dir))) return;
  const j = await readJournal(fs, dir);
  if (j) await rollForward(fs, dir, j);
  for (const name of await fs.readdir(dir)) {
    if (STAGING_RE.test(name) || TMP_RE.test(name)) await fs.remove(joinPath(dir, name));
  }
}

/** Writes `files` into `dir` all-or-nothing and removes `remove` with them (see the module comment). */
export async function commitFiles(
  fs: FileSystem,
  dir: string,
  files: Record<string, Uint8Array | string>,
  remove: string[] = [],
): Promise<void> {
  const names = Object.keys(files);
  for (const n of [...names, ...remove]) checkName(n, dir);
  await fs.mkdirp(dir);
  await recoverFolder(fs, dir);
  const staging = `${STAGING_PREFIX}${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  const sdir = joinPath(dir, staging);
  await fs.mkdirp(sdir);
  try {
    for (const n of names) await fs.writeFileAtomic(joinPath(sdir, n), files[n]);
  } catch (e) {
    await fs.remove(sdir).catch(() => {});
    throw e;
  }
  const journal: Journal = { staging, files: names, remove: remove.filter((r) => !names.includes(r)) };
  await fs.writeFileAtomic(joinPath(dir, COMMIT_JOURNAL), JSON.stringify(journal));
  await rollForward(fs, dir, journal);
}

/** How a reader sees `dir`: through an interrupted commit's journal when there is one. */
export interface CommittedView {
  /** The path to read `name` from, or null when the committed version has no such file. */
  path(name: string): Promise<string | null>;
}

export async function committedView(fs: FileSystem, dir: string): Promise<CommittedView> {
  const j = await readJournal(fs, dir);
  return {
    async path(name: string) {
      if (j?.files.includes(name)) {
        const staged = joinPath(dir, j.staging, name);
        if (await fs.exists(staged)) return staged;
      } else if (j?.remove.includes(name)) return null;
      const p = joinPath(dir, name);
      return (await fs.exists(p)) ? p : null;
    },
  };
}
