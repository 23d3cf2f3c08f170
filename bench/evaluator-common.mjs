// Shared by bench/evaluator-*.mjs: fixture pairs, the built metrics entry, and a Python reference run.
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = fileURLToPath(new URL('../', import.meta.url));

export function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

/** The fixture's sentence pairs (PEFTJS_FIXTURES_METRICS or fixtures/metrics/), repeated `repeat` times. */
export function loadPairs(repeat) {
  const dir = process.env.PEFTJS_FIXTURES_METRICS ?? join(root, 'fixtures/metrics');
  const pairs = JSON.parse(readFileSync(join(dir, 'pairs.json'), 'utf8'));
  const hyps = [];
  const refs = [];
  for (let r = 0; r < repeat; r++) for (const p of pairs) {
    hyps.push(p.hyp);
    refs.push(p.ref);
  }
  return { dir, pairs: pairs.length, hyps, refs, pairsPath: join(dir, 'pairs.json') };
}

/** The built metrics entry (run `npx tsup` in packages/evaluator first). */
export async function loadMetrics() {
  const dist = join(root, 'packages/evaluator/dist/metrics.js');
  if (!existsSync(dist)) {
    console.error(`missing ${dist}: build it with (cd packages/evaluator && npx tsup)`);
    process.exit(2);
  }
  return import(pathToFileURL(dist).href);
}

export function time(fn) {
  const t0 = process.hrtime.bigint();
  const value = fn();
  return { value, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/** Whether `python3 -c "import <module>"` works. */
export function pythonHas(module) {
  const r = spawnSync('python3', ['-c', `import ${module}`], { stdio: 'ignore' });
  return r.status === 0;
}

/** Runs a Python snippet that prints one JSON line last; returns it parsed (or null with the error shown). */
export function runPython(code, args) {
  const r = spawnSync('python3', ['-c', code, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) {
    console.error(`python reference failed (exit ${r.status}):\n${r.stderr}`);
    return null;
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}
