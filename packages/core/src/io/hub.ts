import { PeftError } from '../errors';
import { fetchFileSystem, getFileSystem, joinPath, nodeFileSystem, parseJsonObject, readFileChecked, MAX_JSON_BYTES, type FileSystem } from './fs';

/**
 * `fromPretrained('org/name')` for models, tokenizers and adapters: a local folder wins; otherwise the
 * Hugging Face hub cache as `huggingface_hub` writes it —
 *
 *   <cache>/models--org--name/refs/main                        the commit the branch points to
 *   <cache>/models--org--name/snapshots/<commit>/config.json   symlinks into ../../blobs/<etag>
 *   <cache>/models--org--name/blobs/<etag>
 *
 * read offline; and when the cache lacks the files (and HF_HUB_OFFLINE is not set), `@huggingface/hub`
 * (an optional dependency, imported only then) downloads them into that same layout. URLs are read with
 * fetch, in Node too.
 */
export interface HubOptions {
  /** A branch or tag (read through refs/<name>) or a 40-character commit hash; default "main". */
  revision?: string;
  /** The hub cache folder (default HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Never download: only the cache (default: HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1). */
  localFilesOnly?: boolean;
  /** A hub access token for gated or private repositories (default HF_TOKEN, else the `huggingface-cli login` token file). */
  token?: string;
  /** The hub's address for downloads (default HF_ENDPOINT, else @huggingface/hub's https://huggingface.co). */
  hubUrl?: string;
  /** The hub client (default: `await import('@huggingface/hub')`); tests hand in their own. */
  hub?: HubClient;
}

/** The parts of `@huggingface/hub` a download uses. */
export interface HubClient {
  modelInfo(p: { name: string; revision?: string; additionalFields?: string[]; accessToken?: string; hubUrl?: string }): Promise<{ sha?: string; filePaths?: string[] }>;
  downloadFileToCacheDir(p: { repo: string; path: string; revision?: string; cacheDir?: string; accessToken?: string; hubUrl?: string }): Promise<string>;
}

/** What a fromPretrained reads, which decides whether a cached snapshot is complete. */
export type PretrainedKind = 'model' | 'tokenizer' | 'adapter';

export interface ResolvedPretrained {
  /** The folder (or URL) to read from. */
  dir: string;
  fs: FileSystem;
  /** Where it came from: a local folder, a URL, the hub cache as it was, or the cache after a download. */
  source: 'local' | 'url' | 'hub-cache' | 'hub-download';
}

const dynamicImport = (name: string): Promise<any> => import(/* @vite-ignore */ name);
const env = (k: string): string | undefined => (typeof process !== 'undefined' ? process.env?.[k] : undefined);
const isNode = typeof process !== 'undefined' && !!(process as any).versions?.node;

/**
 * A hub repository id `org/name` (letters, digits, `-`, `_`, `.`; no `--` or `..`). Bare names (the
 * hub's legacy `gpt2`) are not looked up: a mistyped local folder must not turn into a download.
 */
export function isRepoId(s: string): boolean {
  return /^[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?\/[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?$/.test(s) && !s.includes('--') && !s.includes('..');
}

const COMMIT = /^[0-9a-f]{40}$/;

/** huggingface_hub's cache folder: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub. */
export async function hubCacheDir(): Promise<string> {
  const direct = env('HF_HUB_CACHE') || env('HUGGINGFACE_HUB_CACHE');
  if (direct) return direct;
  const home = env('HF_HOME');
  if (home) return joinPath(home, 'hub');
  const xdg = env('XDG_CACHE_HOME');
  if (xdg) return joinPath(xdg, 'huggingface', 'hub');
  const { homedir } = await dynamicImport('node:os');
  return joinPath(homedir(), '.cache', 'huggingface', 'hub');
}

/** huggingface_hub's token: HF_TOKEN, else the file `huggingface-cli login` writes (HF_TOKEN_PATH, else HF_HOME/token). */
export async function storedToken(): Promise<string | undefined> {
  const t = env('HF_TOKEN');
  if (t) return t;
  let file = env('HF_TOKEN_PATH');
  if (!file) {
    const home = env('HF_HOME') || (env('XDG_CACHE_HOME') ? joinPath(env('XDG_CACHE_HOME')!, 'huggingface') : undefined);
    file = joinPath(home ?? joinPath((await dynamicImport('node:os')).homedir(), '.cache', 'huggingface'), 'token');
  }
  try {
    const text = new TextDecoder().decode(await nodeFileSystem.readFile(file, { maxBytes: 4096 })).trim();
    return text || undefined;
  } catch {
    return undefined;
  }
}

/** The cache folder of one model repository: models--org--name. */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.split('/').join('--')}`;
}

/** The files `kind` needs in a snapshot (beyond them, optional ones are fetched when the repo has them). */
async function missingFiles(dir: string, kind: PretrainedKind, fs: FileSystem): Promise<string[]> {
  const has = (f: string) => fs.exists(joinPath(dir, f));
  switch (kind) {
    case 'tokenizer':
      return (await has('tokenizer.json')) ? [] : ['tokenizer.json'];
    case 'adapter': {
      const miss = [];
      if (!(await has('adapter_config.json'))) miss.push('adapter_config.json');
      if (!(await has('adapter_model.safetensors'))) miss.push('adapter_model.safetensors');
      return miss;
    }
    case 'model': {
      const miss = (await has('config.json')) ? [] : ['config.json'];
      if (await has('model.safetensors')) return miss;
      if (!(await has('model.safetensors.index.json'))) return [...miss, 'model.safetensors (or model.safetensors.index.json)'];
      for (const shard of await shardsOf(dir, fs)) if (!(await has(shard))) miss.push(shard);
      return miss;
    }
  }
}

/** The shard files a model.safetensors.index.json names. */
async function shardsOf(dir: string, fs: FileSystem): Promise<string[]> {
  const path = joinPath(dir, 'model.safetensors.index.json');
  const index = parseJsonObject(await readFileChecked(path, fs, MAX_JSON_BYTES, 'the JSON size limit'), path);
  const map = index.weight_map;
  if (!map || typeof map !== 'object') throw new PeftError('INVALID_FILE', `${path}: no "weight_map" object`);
  return [...new Set(Object.values(map as Record<string, unknown>).filter((v): v is string => typeof v === 'string'))];
}

/** What to download for `kind` from a repository whose files are `paths`, before shards are known. */
function wantedFiles(kind: PretrainedKind, paths: Set<string>, repo: string): string[] {
  const pick = (required: string[], optional: string[]) => [...required, ...optional.filter((f) => paths.has(f))];
  switch (kind) {
    case 'tokenizer':
      if (!paths.has('tokenizer.json')) throw new PeftError('FILE_NOT_FOUND', `${repo} on the hub has no tokenizer.json (only tokenizer.json-based tokenizers are supported)`);
      return pick(['tokenizer.json'], ['tokenizer_config.json', 'special_tokens_map.json']);
    case 'adapter':
      for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
        if (!paths.has(f)) throw new PeftError('FILE_NOT_FOUND', `${repo} on the hub has no ${f}${f.endsWith('.safetensors') && paths.has('adapter_model.bin') ? ' (only adapter_model.bin: peftjs reads safetensors)' : ''}`);
      }
      return ['adapter_config.json', 'adapter_model.safetensors'];
    case 'model': {
      if (!paths.has('config.json')) throw new PeftError('FILE_NOT_FOUND', `${repo} on the hub has no config.json`);
      const weights = paths.has('model.safetensors') ? 'model.safetensors' : paths.has('model.safetensors.index.json') ? 'model.safetensors.index.json' : undefined;
      if (!weights) throw new PeftError('FILE_NOT_FOUND', `${repo} on the hub has no model.safetensors or model.safetensors.index.json${paths.has('pytorch_model.bin') ? ' (only pytorch_model.bin: peftjs reads safetensors)' : ''}`);
      return pick(['config.json', weights], ['generation_config.json']);
    }
  }
}

/**
 * Where `nameOrPath` is read from. With `fs` given, exactly that (no lookup). A URL: fetch. A path that
 * exists: that folder. A hub repo id (`org/name`): the HF cache's snapshot for `revision`, downloaded into
 * the cache first when it is incomplete and downloads are allowed; otherwise a FILE_NOT_FOUND error that
 * says where it looked.
 */
export async function resolvePretrained(nameOrPath: string, kind: PretrainedKind, opts: HubOptions & { fs?: FileSystem } = {}): Promise<ResolvedPretrained> {
  if (typeof nameOrPath !== 'string' || nameOrPath.length === 0) {
    throw new PeftError('INVALID_ARGUMENT', `fromPretrained: expected a folder, a URL or a hub id like "org/name", got ${nameOrPath === '' ? 'an empty string' : typeof nameOrPath}`);
  }
  if (opts.fs) return { dir: nameOrPath, fs: opts.fs, source: 'local' };
  if (/^https?:\/\//i.test(nameOrPath)) return { dir: nameOrPath.replace(/\/+$/, ''), fs: fetchFileSystem(), source: 'url' };
  const fs = getFileSystem();
  if (!isNode || fs !== nodeFileSystem) return { dir: nameOrPath, fs, source: 'local' }; // a browser, or setFileSystem's choice
  if (/^file:\/\//i.test(nameOrPath)) {
    const { fileURLToPath } = await dynamicImport('node:url');
    return { dir: fileURLToPath(nameOrPath), fs, source: 'local' };
  }
  if ((await fs.exists(nameOrPath)) || !isRepoId(nameOrPath)) return { dir: nameOrPath, fs, source: 'local' };
  return fromHubCache(nameOrPath, kind, opts);
}

async function fromHubCache(repo: string, kind: PretrainedKind, opts: HubOptions): Promise<ResolvedPretrained> {
  const fs = nodeFileSystem;
  const revision = opts.revision ?? 'main';
  if (typeof revision !== 'string' || !/^[\w.\/-]{1,255}$/.test(revision) || revision.split('/').includes('..')) {
    throw new PeftError('INVALID_ARGUMENT', `fromPretrained: revision ${JSON.stringify(revision)} must be a branch, tag or commit hash`);
  }
  const cache = opts.cacheDir ?? (await hubCacheDir());
  const repoDir = joinPath(cache, repoFolderName(repo));
  const refFile = joinPath(repoDir, 'refs', revision);
  let commit: string | undefined = COMMIT.test(revision) ? revision : undefined;
  if (!commit && (await fs.exists(refFile))) {
    const text = new TextDecoder().decode(await readFileChecked(refFile, fs, 4096, 'the ref size limit')).trim();
    if (!COMMIT.test(text)) throw new PeftError('INVALID_FILE', `${refFile}: not a commit hash (the HF cache's refs/ files hold one 40-character hash)`);
    commit = text;
  }
  let looked: string;
  if (commit) {
    const snapshot = joinPath(repoDir, 'snapshots', commit);
    const missing = await missingFiles(snapshot, kind, fs);
    if (!missing.length) return { dir: snapshot, fs, source: 'hub-cache' };
    looked = `${snapshot}${COMMIT.test(revision) ? '' : ` (${refFile} → ${commit})`} lacks ${missing.join(', ')}`;
  } else {
    looked = (await fs.exists(repoDir)) ? `${refFile} does not exist (no snapshot of revision "${revision}")` : `${repoDir} does not exist`;
  }
  const offline = opts.localFilesOnly ?? (env('HF_HUB_OFFLINE') === '1' || env('TRANSFORMERS_OFFLINE') === '1');
  const where = `"${repo}" is not a local folder, and the HF hub cache has no complete copy: ${looked}`;
  if (offline) {
    throw new PeftError('FILE_NOT_FOUND', `${where}; downloads are off (${opts.localFilesOnly ? 'localFilesOnly' : 'HF_HUB_OFFLINE=1'}): download it first (e.g. \`huggingface-cli download ${repo}\`) or set HF_HUB_CACHE / cacheDir to the cache that has it`);
  }
  let hub: HubClient;
  try {
    hub = opts.hub ?? (await dynamicImport('@huggingface/hub'));
  } catch (e) {
    throw new PeftError('FILE_NOT_FOUND', `${where}; to download it, install @huggingface/hub (\`npm install @huggingface/hub\`): ${(e as Error).message.split('\n')[0]}`);
  }
  const hubUrl = opts.hubUrl ?? env('HF_ENDPOINT');
  const dir = await download(hub, { repo, kind, revision, cacheDir: cache, repoDir, where, accessToken: opts.token ?? (await storedToken()), hubUrl });
  return { dir, fs, source: 'hub-download' };
}

/** Downloads `kind`'s files of `repo` at `revision` into the cache (one snapshot: the revision's commit) and writes refs/<revision>. */
async function download(
  hub: HubClient,
  { repo, kind, revision, cacheDir, repoDir, where, accessToken, hubUrl }: { repo: string; kind: PretrainedKind; revision: string; cacheDir: string; repoDir: string; where: string; accessToken?: string; hubUrl?: string },
): Promise<string> {
  const fail = (e: unknown, what: string): never => {
    if (PeftError.isInstance(e)) throw e;
    throw new PeftError('FILE_NOT_FOUND', `${where}; downloading it failed (${what}: ${(e as Error)?.message?.split('\n')[0] ?? e})`, { cause: e });
  };
  const auth = { ...(accessToken ? { accessToken } : {}), ...(hubUrl ? { hubUrl: hubUrl.replace(/\/+$/, '') } : {}) };
  let info: { sha?: string; filePaths?: string[] };
  try {
    info = await hub.modelInfo({ name: repo, revision, additionalFields: ['sha', 'filePaths'], ...auth });
  } catch (e) {
    return fail(e, `the hub's model info for ${repo}@${revision}`);
  }
  const commit = info.sha;
  if (typeof commit !== 'string' || !COMMIT.test(commit)) throw new PeftError('INVALID_FILE', `the hub answered no commit hash for ${repo}@${revision}`);
  const paths = new Set(info.filePaths ?? []);
  const get = async (path: string) => {
    try {
      // the commit, not the branch: every file lands in snapshots/<commit>/, as huggingface_hub lays it out
      await hub.downloadFileToCacheDir({ repo, path, revision: commit, cacheDir, ...auth });
    } catch (e) {
      fail(e, path);
    }
  };
  const snapshot = joinPath(repoDir, 'snapshots', commit);
  const files = wantedFiles(kind, paths, repo);
  for (const f of files) await get(f);
  if (files.includes('model.safetensors.index.json')) for (const shard of await shardsOf(snapshot, nodeFileSystem)) await get(shard);
  const missing = await missingFiles(snapshot, kind, nodeFileSystem);
  if (missing.length) throw new PeftError('FILE_NOT_FOUND', `${where}; after the download ${snapshot} still lacks ${missing.join(', ')}`);
  if (!COMMIT.test(revision)) {
    // huggingface_hub records which commit a branch or tag was at; the next load then needs no network
    await nodeFileSystem.mkdirp(joinPath(repoDir, 'refs', ...revision.split('/').slice(0, -1)));
    await nodeFileSystem.writeFileAtomic(joinPath(repoDir, 'refs', revision), commit);
  }
  return snapshot;
}
