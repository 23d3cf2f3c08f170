#!/usr/bin/env node
// A JS developer's install, outside the monorepo: packs every package (as npm publish would), creates a
// fresh project in a temp folder, `npm install`s the tarballs (third-party dependencies come from the npm
// registry), then runs a short script that trains a few LoRA steps of the bundled tiny LLaMA with the
// Trainer on wasm and reports which backend, whether @peftjs/native's addon loaded from its prebuild, and
// the losses. Also: require() from CommonJS, a strict TypeScript file against the published types (nodenext),
// no `webgpu` (Dawn) installed, stderr clean.
//
//   node tools/consumer-install.mjs [--keep]      needs `npm run build` first; prints one JSON line
//
// Exits 1 with the reason when any of it fails. tools/consumer-install.test.ts runs it in CI.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packAll, workspacePackages } from './packages.mjs';

const TRAIN = `
import { AutoModelForCausalLM, AutoTokenizer, getPeftModel, LoraConfig, TaskType, Trainer, initBackend, manualSeed, tokenizeRecords, tinyLlamaDir } from 'peftjs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const report = await initBackend();
manualSeed(0);
const dir = tinyLlamaDir();
const tok = await AutoTokenizer.fromPretrained(dir);
const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(dir), new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], taskType: TaskType.CAUSAL_LM }));
const records = Array.from({ length: 8 }, (_, i) => ({ prompt: 'The whale of year ' + (1850 + i) + ' was', completion: ' Moby Dick.' }));
const trainer = new Trainer({
  model: peft,
  args: { outputDir: mkdtempSync(join(tmpdir(), 'consumer-run-')), learningRate: 1e-2, maxSteps: 6, perDeviceTrainBatchSize: 8, loggingSteps: 1, saveStrategy: 'no', seed: 0, progressBar: false },
  trainDataset: tokenizeRecords(records, { tokenizer: tok, maxLength: 16 }),
  padTokenId: tok.padTokenId,
});
await trainer.train();
const losses = trainer.state.logHistory.filter((e) => e.loss !== undefined).map((e) => e.loss);
console.log(JSON.stringify({ backend: report.backend, attempts: report.attempts, native: report.native, losses }));
`;

// A TypeScript user (node16/nodenext resolution, strict): the published .d.ts resolve, and what they declare is
// real types, not a silent \`any\` from an unresolved import inside them.
const TS = `
import { AutoModelForCausalLM, AutoTokenizer, getPeftModel, LoraConfig, initBackend, type BackendReport } from 'peftjs';
import { corpusBleu } from '@peftjs/evaluator/metrics';
import { resolvePretrained } from '@peftjs/core';
type IsAny<T> = 0 extends 1 & T ? true : false;
const notAny = <T>(_v: T, _check: IsAny<T> extends false ? true : never) => {};
export async function main(dir: string): Promise<number> {
  const report: BackendReport = await initBackend();
  const model = await AutoModelForCausalLM.fromPretrained(dir, { revision: 'main', localFilesOnly: true });
  const tok = await AutoTokenizer.fromPretrained(dir);
  const peft = getPeftModel(model, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj'] }));
  notAny(model, true); notAny(tok, true); notAny(peft, true); notAny(report.native, true);
  notAny(corpusBleu, true); notAny(await resolvePretrained(dir, 'model'), true);
  const { logits } = peft.forward({ inputIds: [tok.encode('hi')] });
  notAny(logits, true);
  return logits.shape.length;
}
`;

const CJS = `
const peftjs = require('peftjs');
const core = require('@peftjs/core');
const metrics = require('@peftjs/evaluator/metrics');
if (typeof peftjs.AutoModelForCausalLM !== 'function' || typeof core.initBackend !== 'function' || typeof metrics.corpusBleu !== 'function') throw new Error('CommonJS exports missing');
console.log('cjs ok');
`;

function fail(msg) {
  console.error(`consumer install: ${msg}`);
  process.exit(1);
}

export async function consumerInstall({ keep = false, log = (s) => console.error(s) } = {}) {
  const root = realpathSync(mkdtempSync(join(tmpdir(), 'peftjs-consumer-')));
  const t0 = Date.now();
  try {
    const packages = workspacePackages();
    const missing = packages.filter((p) => !existsSync(join(p.path, 'dist')));
    if (missing.length) throw new Error(`not built: ${missing.map((p) => p.pkg.name).join(', ')} (run npm run build)`);
    const packed = packAll(join(root, 'packs'), packages);
    log(`packed ${packed.length} packages (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    const nativePack = packed.find((p) => p.name === '@peftjs/native');
    if (!nativePack?.files.some((f) => /^prebuilds\/[^/]+\/peftjs_native\.node$/.test(f))) throw new Error('the @peftjs/native tarball has no prebuilds/<platform>/peftjs_native.node');

    const app = join(root, 'app');
    mkdirSync(app);
    const dependencies = Object.fromEntries(packed.map((p) => [p.name, `file:${p.tarball}`]));
    dependencies['@tensorflow/tfjs'] = '^4.22.0';
    const devDependencies = { typescript: '5.9.3', '@types/node': '^20.19.0' };
    // the packages depend on each other by version (^0.1.0): point those at the tarballs, not the registry
    const overrides = Object.fromEntries(packed.map((p) => [p.name, `$${p.name}`]));
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer-app', private: true, type: 'module', dependencies, devDependencies, overrides }, null, 2));
    writeFileSync(join(app, 'check.ts'), TS);
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', skipLibCheck: true, types: ['node'] }, files: ['check.ts'] }));
    writeFileSync(join(app, 'train.mjs'), TRAIN);
    writeFileSync(join(app, 'check.cjs'), CJS);

    const t1 = Date.now();
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, encoding: 'utf8', env: { ...process.env, npm_config_workspaces: 'false' } });
    if (install.status !== 0) throw new Error(`npm install failed (exit ${install.status}):\n${install.stderr.slice(-4000)}`);
    log(`npm install: ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    if (existsSync(join(app, 'node_modules', 'webgpu'))) throw new Error('webgpu (Dawn, ~132 MB) was installed although nobody asked for it');
    const nativeDir = join(app, 'node_modules', '@peftjs', 'native');
    if (!existsSync(nativeDir)) throw new Error('@peftjs/native (an optional dependency of @peftjs/core) was not installed');
    if (existsSync(join(nativeDir, 'build'))) throw new Error('@peftjs/native was built from source at install although its prebuild fits');

    const tsc = spawnSync(process.execPath, [join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: app, encoding: 'utf8' });
    if (tsc.status !== 0) throw new Error(`a TypeScript consumer (nodenext, strict) does not compile against the published types:\n${(tsc.stdout + tsc.stderr).slice(-4000)}`);
    const cjs = spawnSync(process.execPath, ['check.cjs'], { cwd: app, encoding: 'utf8' });
    if (cjs.status !== 0 || cjs.stdout.trim() !== 'cjs ok') throw new Error(`require() from CommonJS failed:\n${cjs.stderr.slice(-2000)}`);

    const t2 = Date.now();
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('PEFTJS_') || k.startsWith('VITEST') || k === 'NODE_OPTIONS') delete env[k];
    const run = spawnSync(process.execPath, ['train.mjs'], { cwd: app, encoding: 'utf8', env, timeout: 300_000 });
    if (run.status !== 0) throw new Error(`the training script failed (exit ${run.status ?? run.signal}):\n${run.stderr.slice(-4000)}`);
    const result = JSON.parse(run.stdout.trim().split('\n').pop());
    log(`trained ${result.losses.length} steps (${((Date.now() - t2) / 1000).toFixed(1)} s)`);
    const problems = [];
    if (result.backend !== 'wasm') problems.push(`backend is ${result.backend}, expected wasm`);
    if (!result.native?.installed) problems.push(`the native addon is not in use: ${result.native?.reason}`);
    else if (result.native.origin !== 'prebuild' || !String(result.native.file).startsWith(join(nativeDir, 'prebuilds'))) problems.push(`the native addon did not load from its prebuild (${result.native.origin}: ${result.native.file})`);
    if (result.losses.length !== 6 || !result.losses.every(Number.isFinite)) problems.push(`expected 6 finite losses, got ${JSON.stringify(result.losses)}`);
    else if (!(result.losses[5] < result.losses[0])) problems.push(`the loss did not fall: ${result.losses.join(', ')}`);
    // what the user sees: no Dawn warnings (webgpu is not installed), no stack traces; the Trainer's own lines go to stdout
    if (run.stderr.trim()) problems.push(`stderr is not clean:\n${run.stderr.slice(-2000)}`);
    if (problems.length) throw new Error(problems.join('; '));
    return { ...result, seconds: (Date.now() - t0) / 1000, project: keep ? app : undefined };
  } finally {
    if (!keep) rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    const r = await consumerInstall({ keep: process.argv.includes('--keep') });
    console.log(JSON.stringify(r));
  } catch (e) {
    fail(e.message);
  }
}
