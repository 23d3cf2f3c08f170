import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { probeDawnAdapter } from './dawn_probe';
import { summarizeAdapter } from './backend';

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(pkgDir, 'dist', 'index.js');
const built = existsSync(dist);

describe('Dawn stays out of the process unless webgpu is chosen', () => {
  it('the probe answers with the adapter (or why there is none) without loading Dawn here', async () => {
    const probe = await probeDawnAdapter();
    expect(probe).toBeDefined();
    if (probe!.adapter) {
      const s = summarizeAdapter(probe!.adapter);
      expect(typeof s.description).toBe('string');
      expect(typeof s.isSoftware).toBe('boolean');
    } else {
      expect(probe!.reason).toMatch(/webgpu|adapter|Dawn/i);
    }
    // Dawn, once loaded, defines its globals on navigator and GPU* constructors: none of that happened here
    expect((globalThis as any).GPUAdapter).toBeUndefined();
  });

  // A consumer's process: the built package, default order, no software GPU allowed (the common case)
  it.runIf(built || process.env.CI)(`initBackend() on a machine whose GPU is not taken writes nothing to stderr${built ? '' : ' (core not built)'}`, () => {
    const script = `
      const { initBackend } = await import(${JSON.stringify(dist)});
      const r = await initBackend();
      console.log(JSON.stringify(r.attempts.map((a) => [a.backend, a.ok, a.reason])));`;
    const env = { ...process.env };
    for (const k of ['PEFTJS_BACKEND', 'PEFTJS_ALLOW_SOFTWARE_GPU', 'PEFTJS_TEST_BACKEND']) delete env[k];
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env, timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const attempts: [string, boolean, string][] = JSON.parse(r.stdout.trim().split('\n').pop()!);
    const webgpu = attempts.find((a) => a[0] === 'webgpu');
    expect(webgpu, JSON.stringify(attempts)).toBeDefined();
    if (webgpu![1]) return; // a hardware adapter: webgpu was chosen, so Dawn may speak
    expect(webgpu![2]).toMatch(/software|no adapter|not installed|failed to start/);
    expect(r.stderr).toBe('');
  });
});
