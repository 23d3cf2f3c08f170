import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { PeftModel, getPeftModel, hubCacheDir, resolvePretrained, type HubClient } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import '@peftjs/lora';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from './auto';
import { AutoTokenizer } from './tokenizer';

// A hub cache laid out exactly as huggingface_hub writes it: content-addressed blobs (LFS files named by
// their sha256, git files by their git blob sha1), snapshots/<commit>/ holding relative symlinks into
// ../../blobs/, refs/<branch or tag> holding the commit hash (no newline), .no_exist/<commit>/ marking a
// file the repo does not have.
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-hub-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const gitBlobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const commitOf = (s: string) => createHash('sha1').update(s).digest('hex');

/** Writes `files` as one commit of `repo` into `cache`; `refs` point at it. Returns the commit. */
function writeSnapshot(cache: string, repo: string, files: Record<string, Buffer>, opts: { refs?: string[]; commit?: string; noExist?: string[] } = {}): string {
  const repoDir = join(cache, `models--${repo.replace('/', '--')}`);
  const commit = opts.commit ?? commitOf(`${repo}:${Object.keys(files).join(',')}:${Math.random()}`);
  for (const [name, bytes] of Object.entries(files)) {
    const etag = name.endsWith('.safetensors') ? sha256(bytes) : gitBlobSha1(bytes);
    const blob = join(repoDir, 'blobs', etag);
    mkdirSync(dirname(blob), { recursive: true });
    if (!existsSync(blob)) writeFileSync(blob, bytes);
    const link = join(repoDir, 'snapshots', commit, name);
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(relative(dirname(link), blob), link);
  }
  for (const name of opts.noExist ?? []) {
    mkdirSync(join(repoDir, '.no_exist', commit), { recursive: true });
    writeFileSync(join(repoDir, '.no_exist', commit, name), '');
  }
  for (const ref of opts.refs ?? []) {
    mkdirSync(dirname(join(repoDir, 'refs', ref)), { recursive: true });
    writeFileSync(join(repoDir, 'refs', ref), commit);
  }
  return commit;
}

const modelDir = tinyLlamaDir();
const read = (f: string) => readFileSync(join(modelDir, f));
const modelFiles = () => ({ 'config.json': read('config.json'), 'generation_config.json': read('generation_config.json'), 'model.safetensors': read('model.safetensors') });
const tokenizerFiles = () => ({ 'tokenizer.json': read('tokenizer.json'), 'tokenizer_config.json': read('tokenizer_config.json') });

const cache = join(tmp, 'hub');
let mainCommit = '';
let v1Commit = '';
beforeAll(() => {
  mainCommit = writeSnapshot(cache, 'peftjs/tiny-llama', { ...modelFiles(), ...tokenizerFiles() }, { refs: ['main'], noExist: ['special_tokens_map.json'] });
  // a tag on another commit, whose snapshot has the model but no tokenizer: the revision decides which is read
  v1Commit = writeSnapshot(cache, 'peftjs/tiny-llama', modelFiles(), { refs: ['v1'] });
});

const savedEnv = { ...process.env };
afterEach(() => {
  for (const k of ['HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME', 'XDG_CACHE_HOME', 'HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_TOKEN_PATH']) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
});

const ids = [[1, 40, 300, 7, 99]];
async function logitsOf(model: { forward(i: { inputIds: number[][] }): { logits: tf.Tensor } }): Promise<Float32Array> {
  const { logits } = model.forward({ inputIds: ids });
  const out = (await logits.data()) as Float32Array;
  logits.dispose();
  return out;
}

describe('fromPretrained("org/name") reads the HF hub cache', () => {
  it('the cache the test wrote is huggingface_hub\'s layout: symlinked snapshot files, blobs, refs/main', () => {
    const repoDir = join(cache, 'models--peftjs--tiny-llama');
    expect(readFileSync(join(repoDir, 'refs', 'main'), 'utf8')).toBe(mainCommit);
    const link = join(repoDir, 'snapshots', mainCommit, 'model.safetensors');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe(`../../blobs/${sha256(read('model.safetensors'))}`);
  });

  it('a model, its tokenizer and the same logits as from the folder, offline (cacheDir)', async () => {
    const resolved = await resolvePretrained('peftjs/tiny-llama', 'model', { cacheDir: cache, localFilesOnly: true });
    expect(resolved).toMatchObject({ dir: join(cache, 'models--peftjs--tiny-llama', 'snapshots', mainCommit), source: 'hub-cache' });
    const fromCache = await AutoModelForCausalLM.fromPretrained('peftjs/tiny-llama', { cacheDir: cache, localFilesOnly: true });
    const fromFolder = await AutoModelForCausalLM.fromPretrained(modelDir);
    try {
      expect(await logitsOf(fromCache)).toEqual(await logitsOf(fromFolder));
      expect(fromCache.generationDefaults).toEqual(fromFolder.generationDefaults);
    } finally {
      fromCache.dispose();
      fromFolder.dispose();
    }
    const tok = await AutoTokenizer.fromPretrained('peftjs/tiny-llama', { cacheDir: cache, localFilesOnly: true });
    const ref = await AutoTokenizer.fromPretrained(modelDir);
    expect(tok.encode('Moby Dick, the whale.')).toEqual(ref.encode('Moby Dick, the whale.'));
  });

  it('HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, is where it looks', async () => {
    delete process.env.HF_HUB_CACHE;
    delete process.env.HUGGINGFACE_HUB_CACHE;
    process.env.HF_HOME = join(tmp, 'hf-home');
    expect(await hubCacheDir()).toBe(join(tmp, 'hf-home', 'hub'));
    process.env.HF_HUB_CACHE = cache;
    expect(await hubCacheDir()).toBe(cache);
    const tok = await AutoTokenizer.fromPretrained('peftjs/tiny-llama', { localFilesOnly: true });
    expect(tok.encode('whale').length).toBeGreaterThan(0);
    delete process.env.HF_HUB_CACHE;
    delete process.env.HF_HOME;
    process.env.XDG_CACHE_HOME = join(tmp, 'xdg');
    expect(await hubCacheDir()).toBe(join(tmp, 'xdg', 'huggingface', 'hub'));
  });

  it('revision: a tag through refs/<tag>, or a commit hash directly', async () => {
    const opts = { cacheDir: cache, localFilesOnly: true };
    expect((await resolvePretrained('peftjs/tiny-llama', 'model', { ...opts, revision: 'v1' })).dir).toMatch(new RegExp(`snapshots/${v1Commit}$`));
    expect((await resolvePretrained('peftjs/tiny-llama', 'model', { ...opts, revision: mainCommit })).dir).toMatch(new RegExp(`snapshots/${mainCommit}$`));
    // the v1 snapshot has no tokenizer: incomplete for a tokenizer, complete for a model
    await expect(AutoTokenizer.fromPretrained('peftjs/tiny-llama', { ...opts, revision: 'v1' })).rejects.toThrow(new RegExp(`snapshots/${v1Commit} \\(.*refs/v1 → ${v1Commit}\\) lacks tokenizer\\.json`));
  });

  it('offline, the error says where it looked and what was missing', async () => {
    const opts = { cacheDir: cache, localFilesOnly: true };
    await expect(AutoModelForCausalLM.fromPretrained('nobody/absent', opts)).rejects.toThrow(new RegExp(`"nobody/absent" is not a local folder.*${join(cache, 'models--nobody--absent').replace(/[/.]/g, '\\$&')} does not exist.*localFilesOnly`));
    await expect(AutoModelForCausalLM.fromPretrained('peftjs/tiny-llama', { ...opts, revision: 'dev' })).rejects.toThrow(/refs\/dev does not exist \(no snapshot of revision "dev"\)/);
    process.env.HF_HUB_OFFLINE = '1';
    await expect(AutoModelForSequenceClassification.fromPretrained('nobody/absent', { cacheDir: cache })).rejects.toThrow(/HF_HUB_OFFLINE=1.*huggingface-cli download nobody\/absent/);
  });

  it('a snapshot whose blob is gone (a dangling symlink) counts as incomplete, naming the file', async () => {
    const c = join(tmp, 'broken');
    const commit = writeSnapshot(c, 'org/broken', modelFiles(), { refs: ['main'] });
    rmSync(join(c, 'models--org--broken', 'blobs', sha256(read('model.safetensors'))));
    await expect(AutoModelForCausalLM.fromPretrained('org/broken', { cacheDir: c, localFilesOnly: true })).rejects.toThrow(new RegExp(`snapshots/${commit} .* lacks model\\.safetensors`));
  });

  it('a sharded checkpoint: every shard of model.safetensors.index.json must be in the snapshot', async () => {
    const c = join(tmp, 'sharded');
    const index = Buffer.from(JSON.stringify({ metadata: {}, weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' } }));
    writeSnapshot(c, 'org/sharded', { 'config.json': read('config.json'), 'model.safetensors.index.json': index, 'model-00001-of-00002.safetensors': Buffer.from('x') }, { refs: ['main'] });
    await expect(resolvePretrained('org/sharded', 'model', { cacheDir: c, localFilesOnly: true })).rejects.toThrow(/lacks model-00002-of-00002\.safetensors/);
  });

  it('a local folder of the same name wins over the cache, and a path that is no repo id is left alone', async () => {
    expect((await resolvePretrained(modelDir, 'model', { cacheDir: cache })).source).toBe('local');
    expect((await resolvePretrained('./no/such/folder', 'model', { cacheDir: cache })).source).toBe('local');
    expect((await resolvePretrained('justaname', 'model', { cacheDir: cache })).source).toBe('local');
  });

  it('an adapter by hub id: PeftModel.fromPretrained reads adapter_config.json and adapter_model.safetensors from the cache', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(modelDir);
    const peft = getPeftModel(base, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], initLoraWeights: false }));
    const saved = join(tmp, 'adapter-folder');
    await peft.savePretrained(saved);
    const want = await logitsOf(peft);
    peft.dispose();
    writeSnapshot(cache, 'someone/tiny-lora', { 'adapter_config.json': readFileSync(join(saved, 'adapter_config.json')), 'adapter_model.safetensors': readFileSync(join(saved, 'adapter_model.safetensors')) }, { refs: ['main'] });
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained('peftjs/tiny-llama', { cacheDir: cache, localFilesOnly: true }), 'someone/tiny-lora', { cacheDir: cache, localFilesOnly: true });
    try {
      expect(await logitsOf(again)).toEqual(want);
    } finally {
      again.dispose();
    }
  });
});

describe('online: @huggingface/hub downloads into the same layout, then it is read offline', () => {
  /** A stand-in for @huggingface/hub writing as its downloadFileToCacheDir does (blob + relative symlink). */
  function fakeHub(repoFiles: Record<string, Buffer>, commit: string) {
    const calls: string[] = [];
    const hub: HubClient = {
      async modelInfo({ name, revision }) {
        calls.push(`info ${name}@${revision}`);
        return { sha: commit, filePaths: Object.keys(repoFiles) };
      },
      async downloadFileToCacheDir({ repo, path, revision, cacheDir }) {
        calls.push(`get ${path}@${revision}`);
        const bytes = repoFiles[path];
        if (!bytes) throw new Error(`404 ${path}`);
        const blob = join(cacheDir!, `models--${repo.replace('/', '--')}`, 'blobs', path.endsWith('.safetensors') ? sha256(bytes) : gitBlobSha1(bytes));
        mkdirSync(dirname(blob), { recursive: true });
        writeFileSync(blob, bytes);
        const link = join(cacheDir!, `models--${repo.replace('/', '--')}`, 'snapshots', revision!, path);
        mkdirSync(dirname(link), { recursive: true });
        symlinkSync(relative(dirname(link), blob), link);
        return link;
      },
    };
    return { hub, calls };
  }

  it('downloads only what a model needs at the branch\'s commit, writes refs/main, and the next load needs no network', async () => {
    const c = join(tmp, 'online');
    const commit = commitOf('online');
    const { hub, calls } = fakeHub({ ...modelFiles(), ...tokenizerFiles(), 'README.md': Buffer.from('# card'), 'pytorch_model.bin': Buffer.from('x') }, commit);
    const model = await AutoModelForCausalLM.fromPretrained('peftjs/tiny-llama', { cacheDir: c, hub });
    model.dispose();
    expect(calls).toEqual([`info peftjs/tiny-llama@main`, `get config.json@${commit}`, `get model.safetensors@${commit}`, `get generation_config.json@${commit}`]);
    expect(readFileSync(join(c, 'models--peftjs--tiny-llama', 'refs', 'main'), 'utf8')).toBe(commit);
    const again = await resolvePretrained('peftjs/tiny-llama', 'model', { cacheDir: c, hub, localFilesOnly: true });
    expect(again.source).toBe('hub-cache');
    expect(calls.length).toBe(4);
    // the tokenizer is not there yet: downloaded on its own
    await AutoTokenizer.fromPretrained('peftjs/tiny-llama', { cacheDir: c, hub });
    expect(calls.slice(4)).toEqual([`info peftjs/tiny-llama@main`, `get tokenizer.json@${commit}`, `get tokenizer_config.json@${commit}`]);
  });

  it('the token: HF_TOKEN, else the file huggingface-cli login writes under HF_HOME', async () => {
    const c = join(tmp, 'online-token');
    const seen: (string | undefined)[] = [];
    const { hub } = fakeHub(modelFiles(), commitOf('token'));
    const spy: HubClient = { ...hub, modelInfo: (p) => (seen.push(p.accessToken), hub.modelInfo(p)) };
    const home = join(tmp, 'token-home');
    mkdirSync(home, { recursive: true });
    writeFileSync(join(home, 'token'), 'hf_fromfile\n');
    delete process.env.HF_TOKEN;
    delete process.env.HF_TOKEN_PATH;
    process.env.HF_HOME = home;
    await resolvePretrained('org/gated', 'model', { cacheDir: c, hub: spy });
    process.env.HF_TOKEN = 'hf_fromenv';
    await resolvePretrained('org/gated2', 'model', { cacheDir: c, hub: spy });
    await resolvePretrained('org/gated3', 'model', { cacheDir: c, hub: spy, token: 'hf_given' });
    expect(seen).toEqual(['hf_fromfile', 'hf_fromenv', 'hf_given']);
  });

  it('a repository with only PyTorch weights, or a failing download, is a clear error', async () => {
    const c = join(tmp, 'online-bad');
    const { hub } = fakeHub({ 'config.json': read('config.json'), 'pytorch_model.bin': Buffer.from('x') }, commitOf('bad'));
    await expect(AutoModelForCausalLM.fromPretrained('org/pt-only', { cacheDir: c, hub })).rejects.toThrow(/org\/pt-only on the hub has no model\.safetensors .*only pytorch_model\.bin/);
    const broken: HubClient = { ...hub, modelInfo: async () => Promise.reject(new Error('getaddrinfo ENOTFOUND')) };
    await expect(AutoModelForCausalLM.fromPretrained('org/net-down', { cacheDir: c, hub: broken })).rejects.toThrow(/"org\/net-down" is not a local folder.*does not exist; downloading it failed .*ENOTFOUND/);
  });
});

// The real @huggingface/hub against a local server that answers as the hub does (model info, paths-info,
// resolve with ranges): what it writes must be huggingface_hub's layout, read back offline.
describe('online with the real @huggingface/hub, against a local stand-in for the hub', () => {
  let server: Server;
  let hubUrl = '';
  const commit = commitOf('served');
  const served: Record<string, Buffer> = { ...modelFiles(), ...tokenizerFiles(), 'README.md': Buffer.from('# tiny') };
  const requests: string[] = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      requests.push(`${req.method} ${url.pathname}`);
      const json = (v: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(v));
      let m = /^\/api\/models\/peftjs\/tiny-llama\/revision\/([^/]+)$/.exec(url.pathname);
      if (m && req.method === 'GET') {
        return json({ _id: 'x', id: 'peftjs/tiny-llama', sha: commit, private: false, gated: false, downloads: 0, likes: 0, lastModified: '2026-12-01T00:00:00.000Z', siblings: Object.keys(served).map((rfilename) => ({ rfilename })) });
      }
      m = /^\/api\/models\/peftjs\/tiny-llama\/paths-info\/([^/]+)$/.exec(url.pathname);
      if (m && req.method === 'POST') {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          const { paths } = JSON.parse(body) as { paths: string[] };
          json(paths.filter((p) => served[p]).map((path) => {
            const b = served[path];
            return { type: 'file', path, size: b.length, oid: gitBlobSha1(b), ...(path.endsWith('.safetensors') ? { lfs: { oid: sha256(b), size: b.length, pointerSize: 134 } } : {}), lastCommit: { id: commitOf(path), title: 'add', date: '2026-12-01T00:00:00.000Z' } };
          }));
        });
        return;
      }
      m = /^\/peftjs\/tiny-llama\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
      const b = m && served[decodeURIComponent(m[2])];
      if (!b) return res.writeHead(404, { 'x-error-code': 'EntryNotFound' }).end();
      const etag = `"${m![2].endsWith('.safetensors') ? sha256(b) : gitBlobSha1(b)}"`;
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      if (range) {
        const start = Number(range[1]);
        const end = range[2] ? Math.min(Number(range[2]), b.length - 1) : b.length - 1;
        res.writeHead(206, { etag, 'content-range': `bytes ${start}-${end}/${b.length}`, 'content-length': end - start + 1 });
        return res.end(b.subarray(start, end + 1));
      }
      res.writeHead(200, { etag, 'content-length': b.length }).end(b);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    hubUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('downloads into blobs/ + symlinked snapshots/<commit>/ + refs/main, then loads offline with the same logits', async () => {
    const c = join(tmp, 'real-hub');
    const model = await AutoModelForCausalLM.fromPretrained('peftjs/tiny-llama', { cacheDir: c, hubUrl });
    const repoDir = join(c, 'models--peftjs--tiny-llama');
    expect(readFileSync(join(repoDir, 'refs', 'main'), 'utf8')).toBe(commit);
    for (const f of ['config.json', 'model.safetensors', 'generation_config.json']) {
      const link = join(repoDir, 'snapshots', commit, f);
      expect(lstatSync(link).isSymbolicLink(), f).toBe(true);
      expect(readlinkSync(link)).toBe(`../../blobs/${f.endsWith('.safetensors') ? sha256(served[f]) : gitBlobSha1(served[f])}`);
    }
    expect(existsSync(join(repoDir, 'snapshots', commit, 'tokenizer.json'))).toBe(false); // only what a model needs
    expect(requests.some((r) => r.includes('README.md'))).toBe(false);
    const before = requests.length;
    const offline = await AutoModelForCausalLM.fromPretrained('peftjs/tiny-llama', { cacheDir: c, hubUrl, localFilesOnly: true });
    try {
      expect(requests.length).toBe(before);
      expect(await logitsOf(offline)).toEqual(await logitsOf(model));
    } finally {
      model.dispose();
      offline.dispose();
    }
  });
});

describe('URLs work in Node without a file system handed in', () => {
  let server: Server;
  let base = '';
  beforeAll(async () => {
    server = createServer((req, res) => {
      const m = /^\/(tiny|adapter)\/(.*)$/.exec(req.url ?? '/');
      const name = decodeURIComponent(m?.[2] ?? '');
      const file = join(m?.[1] === 'adapter' ? adapterDir : modelDir, name);
      if (!/^[\w.-]+$/.test(name) || !existsSync(file)) {
        res.writeHead(404).end();
        return;
      }
      const bytes = readFileSync(file);
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(req.method === 'HEAD' ? undefined : bytes);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/tiny/`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));
  const adapterDir = join(tmp, 'url-adapter');

  it('a model and a tokenizer by http URL give what the folder gives', async () => {
    const fromUrl = await AutoModelForCausalLM.fromPretrained(base);
    const fromFolder = await AutoModelForCausalLM.fromPretrained(modelDir);
    try {
      expect(await logitsOf(fromUrl)).toEqual(await logitsOf(fromFolder));
    } finally {
      fromUrl.dispose();
      fromFolder.dispose();
    }
    const tok = await AutoTokenizer.fromPretrained(base);
    expect(tok.encode('Call me Ishmael.')).toEqual((await AutoTokenizer.fromPretrained(modelDir)).encode('Call me Ishmael.'));
  });

  it('an adapter by http URL loads as from its folder', async () => {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(modelDir), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj'], initLoraWeights: false }));
    await peft.savePretrained(adapterDir);
    const want = await logitsOf(peft);
    peft.dispose();
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(base), base.replace(/\/tiny\/$/, '/adapter/'));
    try {
      expect(await logitsOf(again)).toEqual(want);
    } finally {
      again.dispose();
    }
  });
});
