// kill -9 during savePretrained and during checkpointing (issue 14): whatever moment the process dies,
// the folder loads as exactly the old or exactly the new adapter, and the next run leaves no leftovers.
// KILL_RUNS sets the number of kills (default 8 saves + 4 checkpoints, about 30 s).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import '@peftjs/lora'; // registers LORA for readAdapterConfig
import { committedView, nodeFileSystem, parseSafetensors, rawToArray, readAdapterConfig } from '@peftjs/core';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-kill-'));
const bundleDir = join(root, 'node_modules', '.cache', 'peftjs-kill-test');
const child = join(bundleDir, `kill-child-${process.pid}.mjs`);
const RUNS = Number(process.env.KILL_RUNS ?? 8);
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
  rmSync(child, { force: true });
});

beforeAll(async () => {
  mkdirSync(bundleDir, { recursive: true });
  await build({
    entryPoints: [fileURLToPath(new URL('./__fixtures__/kill-child.ts', import.meta.url))],
    outfile: child,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: ['@tensorflow/*', '@huggingface/*', 'zod'],
    alias: Object.fromEntries(['core', 'models', 'lora'].map((p) => [`@peftjs/${p}`, join(root, 'packages', p, 'src', 'index.ts')])),
    logLevel: 'error',
  });
});

/** Runs the child until it has printed `after` "saved" lines, waits a random 0–maxDelay ms, then SIGKILLs it. */
function runAndKill(mode: 'save' | 'train', dir: string, after: number, maxDelay: number): Promise<{ saved: number; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [child, mode, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let saved = 0;
    let stderr = '';
    let armed = false;
    proc.stdout!.on('data', (d: Buffer) => {
      saved += (d.toString().match(/saved /g) ?? []).length;
      if (!armed && saved >= after) {
        armed = true;
        setTimeout(() => proc.kill('SIGKILL'), Math.random() * maxDelay);
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.on('exit', () => resolve({ saved, stderr }));
    setTimeout(() => proc.kill('SIGKILL'), 20_000); // never hang the suite
  });
}

/** The adapter as peftjs loads it: (lora_alpha, the value of every weight); a mix of saves is an error. */
async function loadedAdapter(dir: string): Promise<string> {
  const config = (await readAdapterConfig(dir)) as unknown as { loraAlpha: number };
  const view = await committedView(nodeFileSystem, dir);
  const weights = parseSafetensors(new Uint8Array(readFileSync((await view.path('adapter_model.safetensors'))!)));
  const values = new Set<number>();
  for (const t of Object.values(weights.tensors)) for (const v of rawToArray(t)) values.add(v);
  if (values.size !== 1) throw new Error(`weights from several saves: ${[...values]}`);
  return `${config.loraAlpha}/${[...values][0]}`;
}

describe('kill -9', () => {
  it(`during savePretrained (${RUNS} kills): the folder loads as exactly the old or the new adapter`, async () => {
    const dir = join(tmp, 'adapter');
    const seen = new Set<string>();
    for (let k = 0; k < RUNS; k++) {
      const r = await runAndKill('save', dir, 1, 400);
      expect(r.saved, r.stderr).toBeGreaterThan(0);
      const got = await loadedAdapter(dir);
      expect(['8/1', '16/2']).toContain(got); // A or B, never B's weights with A's lora_alpha
      seen.add(got);
    }
    // the next save cleans up whatever the kills left
    await runAndKill('save', dir, 1, 0);
    const left = readdirSync(dir).filter((n) => n.includes('.tmp-') || n.startsWith('.peftjs'));
    expect(left.length).toBeLessThanOrEqual(2); // only what the very last kill may have left mid-save
  });

  it(`during checkpointing (${Math.max(2, RUNS >> 1)} kills): every checkpoint folder is whole, resume works, no leftovers grow`, async () => {
    const dir = join(tmp, 'train');
    let last = -1;
    for (let k = 0; k < Math.max(2, RUNS >> 1); k++) {
      const r = await runAndKill('train', dir, 2, 300);
      expect(r.saved, r.stderr).toBeGreaterThan(0);
      const names = readdirSync(dir);
      const ckpts = names.filter((n) => /^checkpoint-\d+$/.test(n));
      expect(ckpts.length).toBeGreaterThan(0);
      for (const c of ckpts) {
        const state = JSON.parse(readFileSync(join(dir, c, 'trainer_state.json'), 'utf8'));
        expect(`checkpoint-${state.global_step}`).toBe(c);
        await readAdapterConfig(join(dir, c));
        parseSafetensors(new Uint8Array(readFileSync(join(dir, c, 'trainable_params.safetensors'))));
      }
      // a resumed run continues from the newest checkpoint (steps keep growing)
      const newest = Math.max(...ckpts.map((c) => Number(c.slice(11))));
      expect(newest).toBeGreaterThan(last);
      last = newest;
      // at most the leftovers of this one kill (the train start of the next run removes them)
      expect(names.filter((n) => n.startsWith('.tmp-checkpoint-')).length).toBeLessThanOrEqual(2);
    }
  });
});
