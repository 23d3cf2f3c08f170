#!/usr/bin/env node
// Checks that every workspace package is ready to publish, so a new package cannot miss a field:
//
//   node tools/check-packages.mjs            the package.json fields, LICENSE, README, sideEffects, webgpu
//   node tools/check-packages.mjs --pack     also packs every package (needs `npm run build`) and runs
//                                            publint and @arethetypeswrong/cli on each tarball
//
// Prints one line per problem (naming the package.json and the field) and exits 1 when there is any.
// tools/check-packages.test.ts runs the same checks in the test suite.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packAll, REPO_URL, ROOT, workspacePackages } from './packages.mjs';

const require = createRequire(import.meta.url);

/** Top-level statements that change global state on import (kernel, gradient or method registrations). */
const SIDE_EFFECT = /^(?:export\s+)?(?:const|let)\s+\w+\s*(?::[^=]+)?=\s*defineOp\b|^(?:tf\.)?(?:register|install|ensure)\w*\s*\(/m;

function sourceFiles(dir) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (/\.(ts|mts|js|mjs)$/.test(name) && !/\.test(-d)?\.|test-helpers|\.d\.ts$/.test(name)) out.push(p);
  }
  return out;
}

/** The files of `src` whose top level registers something on import. */
export function sideEffectFiles(pkgDir) {
  return sourceFiles(join(pkgDir, 'src')).filter((f) => SIDE_EFFECT.test(readFileSync(f, 'utf8')));
}

/**
 * Problems with the package at `pkgDir` (packages/<dir>), each a sentence naming its package.json field.
 * `root` holds the LICENSE every package must carry a copy of.
 */
export function checkPackage(pkgDir, { root = ROOT, dirName = pkgDir.split(/[\\/]/).pop() } = {}) {
  const file = join(pkgDir, 'package.json');
  const at = relative(root, file) || file;
  const problems = [];
  const bad = (field, msg) => problems.push(`${at}: ${field}: ${msg}`);
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    return [`${at}: cannot be read as JSON (${e.message})`];
  }
  const expectedName = dirName === 'peftjs' ? 'peftjs' : `@peftjs/${dirName}`;
  if (pkg.name !== expectedName) bad('name', `is ${JSON.stringify(pkg.name)}, expected "${expectedName}" (the folder's name)`);
  if (typeof pkg.version !== 'string' || !/^\d+\.\d+\.\d+/.test(pkg.version)) bad('version', 'must be a semver version');
  if (typeof pkg.description !== 'string' || pkg.description.length < 20) bad('description', 'must say what the package is (20 characters or more)');
  if (pkg.license !== 'Apache-2.0') bad('license', `is ${JSON.stringify(pkg.license)}, expected "Apache-2.0"`);
  const license = join(pkgDir, 'LICENSE');
  const rootLicense = join(root, 'LICENSE');
  if (!existsSync(license)) bad('LICENSE', `no LICENSE file beside package.json (copy ${relative(pkgDir, rootLicense)})`);
  else if (existsSync(rootLicense) && readFileSync(license, 'utf8') !== readFileSync(rootLicense, 'utf8')) bad('LICENSE', 'differs from the repository root LICENSE');
  const files = Array.isArray(pkg.files) ? pkg.files : undefined;
  if (!files) bad('files', 'must list what is published (dist, README.md, LICENSE)');
  else for (const f of ['dist', 'README.md', 'LICENSE']) if (!files.includes(f)) bad('files', `does not include "${f}"`);
  const repo = pkg.repository;
  if (!repo || typeof repo !== 'object') bad('repository', `missing; expected { type: "git", url: "git+${REPO_URL}.git", directory: "packages/${dirName}" }`);
  else {
    if (repo.type !== 'git') bad('repository.type', 'must be "git"');
    if (repo.url !== `git+${REPO_URL}.git`) bad('repository.url', `is ${JSON.stringify(repo.url)}, expected "git+${REPO_URL}.git"`);
    if (repo.directory !== `packages/${dirName}`) bad('repository.directory', `is ${JSON.stringify(repo.directory)}, expected "packages/${dirName}"`);
  }
  if (typeof pkg.homepage !== 'string' || !pkg.homepage.startsWith(REPO_URL)) bad('homepage', `missing or not under ${REPO_URL}`);
  if (typeof pkg.bugs?.url !== 'string' || !pkg.bugs.url.startsWith(REPO_URL)) bad('bugs.url', `missing or not under ${REPO_URL}`);
  if (!Array.isArray(pkg.keywords) || pkg.keywords.length < 3 || !pkg.keywords.every((k) => typeof k === 'string')) bad('keywords', 'must be a list of at least 3 words');
  else if (!pkg.keywords.includes('peft')) bad('keywords', 'must include "peft"');
  if (typeof pkg.engines?.node !== 'string') bad('engines.node', 'missing (the Node versions the package runs on, e.g. ">=20.19")');
  if (pkg.type !== 'module') bad('type', 'must be "module" (ESM first; CJS through exports.require)');

  // sideEffects: false lets bundlers drop an import whose only job is to register kernels or methods
  if (pkg.sideEffects === undefined) bad('sideEffects', 'missing: say false, true or which files register something on import');
  else if (typeof pkg.sideEffects !== 'boolean' && !(Array.isArray(pkg.sideEffects) && pkg.sideEffects.every((s) => typeof s === 'string'))) bad('sideEffects', 'must be a boolean or a list of files');
  else if (pkg.sideEffects === false) {
    const effects = sideEffectFiles(pkgDir);
    if (effects.length) bad('sideEffects', `is false but ${effects.map((f) => relative(pkgDir, f)).join(', ')} register(s) kernels or methods at import`);
  } else if (Array.isArray(pkg.sideEffects) && !pkg.sideEffects.some((s) => /dist\//.test(s))) {
    bad('sideEffects', 'lists no file under dist/ (what consumers import)');
  }
  // a bare `import './x'` inside the package is there for its side effects: the bundler building dist/ drops it
  // unless sideEffects covers x (it happened: quant's webgpu fast path vanished from dist/)
  if (Array.isArray(pkg.sideEffects)) {
    const listed = new Set(pkg.sideEffects.map((f) => f.replace(/^\.\//, '')));
    for (const f of sourceFiles(join(pkgDir, 'src'))) {
      for (const m of readFileSync(f, 'utf8').matchAll(/^import\s+['"](\.{1,2}\/[^'"]+)['"];?\s*$/gm)) {
        const target = relative(pkgDir, join(f, '..', m[1])).replace(/\\/g, '/');
        const candidates = [target, `${target}.ts`, `${target}/index.ts`];
        if (!candidates.some((c) => listed.has(c))) bad('sideEffects', `does not list ${candidates[1]}, which ${relative(pkgDir, f)} imports for its side effects (a bundler drops that import)`);
      }
    }
  }

  // exports: types first in every condition (TypeScript takes the first match); node10 needs typesVersions
  const exp = pkg.exports;
  if (!exp || typeof exp !== 'object') bad('exports', 'missing');
  else {
    if (!exp['.']) bad('exports', 'has no "." entry');
    if (exp['./package.json'] !== './package.json') bad('exports', 'must expose "./package.json"');
    for (const [sub, target] of Object.entries(exp)) {
      if (sub === './package.json') continue;
      for (const cond of ['import', 'require']) {
        const c = target?.[cond];
        if (!c || typeof c !== 'object') bad(`exports["${sub}"].${cond}`, 'missing (ESM and CJS are both published)');
        else if (Object.keys(c)[0] !== 'types') bad(`exports["${sub}"].${cond}`, '"types" must come first');
      }
      if (sub !== '.') {
        const key = sub.slice(2);
        const tv = pkg.typesVersions?.['*']?.[key];
        if (!Array.isArray(tv) || tv[0] !== target?.import?.types) {
          bad('typesVersions', `has no "*": { "${key}": ["${target?.import?.types}"] } (TypeScript's node10 resolution cannot see exports["${sub}"] without it)`);
        }
      }
    }
  }
  if (pkg.types !== exp?.['.']?.import?.types) bad('types', `must be ${JSON.stringify(exp?.['.']?.import?.types)} (exports["."].import.types), for node10 resolution`);

  // webgpu is Dawn for five platforms (≈ 132 MB): never forced on an install
  for (const field of ['dependencies', 'optionalDependencies']) {
    if (pkg[field]?.webgpu) bad(`${field}.webgpu`, 'installs 132 MB of Dawn for every user: make it an optional peer (peerDependencies + peerDependenciesMeta.webgpu.optional)');
  }
  for (const peer of Object.keys(pkg.peerDependencies ?? {})) {
    if (['webgpu', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu'].includes(peer) && pkg.peerDependenciesMeta?.[peer]?.optional !== true) {
      bad(`peerDependenciesMeta["${peer}"]`, 'must be { "optional": true }');
    }
  }

  const readme = join(pkgDir, 'README.md');
  if (!existsSync(readme)) bad('README.md', 'missing');
  else if (!/```(ts|js|typescript|javascript|sh|bash)\n/.test(readFileSync(readme, 'utf8'))) bad('README.md', 'has no runnable example (a ```ts or ```js block)');
  return problems;
}

/** publint (warnings and errors) on a packed tarball: one line per message. */
export async function runPublint(tarball) {
  const { publint } = await import('publint');
  const { formatMessage } = await import('publint/utils');
  const buf = readFileSync(tarball);
  const { messages, pkg } = await publint({ pack: { tarball: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) }, level: 'warning', strict: true });
  return messages.map((m) => `publint ${m.type}: ${formatMessage(m, pkg) ?? m.code}`.replace(/\x1b\[[0-9;]*m/g, ''));
}

/** @arethetypeswrong/cli (strict profile: node10, node16 CJS and ESM, bundler) on a tarball. */
export async function runAttw(tarball) {
  const bin = join(require.resolve('@arethetypeswrong/cli/package.json'), '..', 'dist', 'index.js');
  const { stdout, stderr, code } = await new Promise((resolve) => {
    execFile(process.execPath, [bin, tarball, '--format', 'json'], { encoding: 'utf8', maxBuffer: 256 << 20 }, (err, out, errOut) => resolve({ stdout: out, stderr: errOut, code: err?.code ?? 0 }));
  });
  // attw exits 1 when it finds problems; the JSON says which
  if (!stdout) return [`attw failed (exit ${code}): ${String(stderr).split('\n')[0]}`];
  const j = JSON.parse(stdout);
  if (j.analysis?.types === false || j.types === false) return ['attw: the package contains no types'];
  const problems = Array.isArray(j.problems) ? j.problems : Object.values(j.problems ?? {}).flat();
  return problems.map((p) => `attw ${p.kind}: ${p.entrypoint ?? ''} ${p.resolutionKind ?? ''}`.trim());
}

/**
 * Packs every package and lints the tarballs (attw on `jobs` tarballs at once: it type-checks, the slow
 * part); returns { name: problems[] } (empty lists when clean).
 */
export async function lintPacked(dest, packages = workspacePackages(), jobs = Math.max(1, Math.min(4, availableParallelism()))) {
  const packed = packAll(dest, packages);
  const out = {};
  for (const p of packed) out[p.name] = await runPublint(p.tarball);
  const queue = [...packed];
  await Promise.all(Array.from({ length: jobs }, async () => {
    for (let p = queue.shift(); p; p = queue.shift()) out[p.name].push(...(await runAttw(p.tarball)));
  }));
  return out;
}

async function main() {
  const problems = workspacePackages().flatMap((p) => checkPackage(p.path));
  if (process.argv.includes('--pack')) {
    const dest = mkdtempSync(join(tmpdir(), 'peftjs-pack-'));
    try {
      for (const [name, list] of Object.entries(await lintPacked(dest))) problems.push(...list.map((l) => `${name}: ${l}`));
    } finally {
      rmSync(dest, { recursive: true, force: true });
    }
  }
  for (const p of problems) console.log(p);
  console.log(problems.length ? `${problems.length} packaging problem(s)` : `every package is ready to publish (${workspacePackages().length} packages)`);
  process.exit(problems.length ? 1 : 0);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
