// Training in child processes: killed with SIGKILL mid-run then resumed, and interrupted with SIGINT/SIGTERM.
// The child (src/__fixtures__/train-child.ts) is bundled from the sources with esbuild, so this test needs no build.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-trainer-proc-'));
// inside the repo so the bundle's bare imports (@tensorflow/…) resolve from node_modules
const bundleDir = join(root, 'node_modules', '.cache', 'peftjs-trainer-test');
const child = join(bundleDir, `train-child-${process.pid}.mjs`);
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
  rmSync(child, { force: true });
});

beforeAll(async () => {
  mkdirSync(bundleDir, { recursive: true });
  const pkgs = ['core', 'models', 'lora'];
  await build({
    entryPoints: [fileURLToPath(new URL('./__fixtures__/train-child.ts', import.meta.url))],
    outfile: child,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: ['@tensorflow/*', '@huggingface/*', 'zod'],
    alias: Object.fromEntries(pkgs.map((p) => [`@peftjs/${p}`, join(root, 'packages', p, 'src', 'index.ts')])),
    logLevel: 'error',
  });
});

interface Run {
  proc: ChildProcess;
  lines: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function start(outputDir: string, resume: boolean, onLine?: (line: string, run: Run) => void): Run {
  const proc = spawn(process.execPath, [child, outputDir, resume ? '1' : '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const run: Run = { proc, lines: [], exit: undefined as never };
  let stderr = '';
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      run.lines.push(line);
      onLine?.(line, run);
    }
  });
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  run.exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal, stderr })));
  return run;
}

const adapterBytes = (dir: string) => readFileSync(join(dir, 'final', 'adapter_model.safetensors'));

describe('training in a child process', () => {
  it('a run killed with SIGKILL after a checkpoint resumes to the same final adapter as an uninterrupted run', async () => {
    const full = join(tmp, 'full');
    const a = start(full, false);
    const ra = await a.exit;
    expect(ra.code, ra.stderr).toBe(0);
    expect(a.lines.filter((l) => l.startsWith('step '))).toHaveLength(12);

    // kill at a random step after the checkpoint of step 4 (and before the one of step 8)
    const killAt = 5 + Math.floor(Math.random() * 3);
    const cut = join(tmp, 'cut');
    const b = start(cut, false, (line, run) => {
      if (line === `step ${killAt}`) run.proc.kill('SIGKILL');
    });
    const rb = await b.exit;
    expect(rb.signal, rb.stderr).toBe('SIGKILL');
    expect(b.lines).toContain('saved 4');
    expect(existsSync(join(cut, 'final'))).toBe(false);
    // no half-written checkpoint is ever visible under its final name
    for (const name of readdirSync(cut).filter((n) => /^checkpoint-\d+$/.test(n))) {
      expect(existsSync(join(cut, name, 'trainer_state.json'))).toBe(true);
    }

    const c = start(cut, true);
    const rc = await c.exit;
    expect(rc.code, rc.stderr).toBe(0);
    expect(c.lines[0]).toMatch(/^step (5|6|7)$/);
    expect(Buffer.compare(adapterBytes(cut), adapterBytes(full))).toBe(0);
  });

  it.each(['SIGINT', 'SIGTERM'] as const)('%s writes a checkpoint at the current step, then exits', async (sig) => {
    const dir = join(tmp, sig);
    const r = start(dir, false, (line, run) => {
      if (line === 'step 3') run.proc.kill(sig);
    });
    const res = await r.exit;
    expect(res.code, res.stderr).toBe(sig === 'SIGINT' ? 130 : 143);
    const saved = r.lines.filter((l) => l.startsWith('saved ')).map((l) => Number(l.slice(6)));
    const last = saved.at(-1)!;
    expect(last).toBeGreaterThanOrEqual(3);
    const state = JSON.parse(readFileSync(join(dir, `checkpoint-${last}`, 'trainer_state.json'), 'utf8'));
    expect(state.global_step).toBe(last);
    expect(r.lines).not.toContain('done');
  });

  // (that the listeners go at the first signal, so a second gets Node's default, is interrupt.test.ts's check)
  it('two SIGINTs in a row: the process ends, whatever it wrote is whole, and the run resumes to the end', async () => {
    const dir = join(tmp, 'twice');
    const r = start(dir, false, (line, run) => {
      if (line !== 'step 3') return;
      run.proc.kill('SIGINT');
      setTimeout(() => run.proc.kill('SIGINT'), 20);
    });
    const res = await r.exit;
    // ended by the signal itself (no exit code), unless the first one's checkpoint and exit beat the second
    if (res.signal !== null) expect(res.signal, res.stderr).toBe('SIGINT');
    else expect(res.code, res.stderr).toBe(130);
    expect(r.lines).not.toContain('done');
    for (const name of readdirSync(dir).filter((f) => /^checkpoint-\d+$/.test(f))) {
      expect(existsSync(join(dir, name, 'trainer_state.json')), name).toBe(true);
    }
    const c = start(dir, true);
    const rc = await c.exit;
    expect(rc.code, rc.stderr).toBe(0);
    expect(c.lines).toContain('done');
  });
});
