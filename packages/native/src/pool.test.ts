import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The addon's thread pool: a product that starts right after setThreads() created new workers must not
// wait for a worker that has not been scheduled yet. A deadlock here blocks Node's event loop (vitest's
// own timeouts cannot fire), so the loop runs in a child process with a deadline.
const addon = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'peftjs_native.node');
const built = process.platform === 'linux' && process.arch === 'x64' && existsSync(addon);

const child = `
const b = require(${JSON.stringify(addon)});
const M = 256, N = 256, K = 256; // ≈ 34 MFLOP: split into tasks across the pool
const a = new Float32Array(M * K).fill(1), w = new Float32Array(K * N).fill(1), c = new Float32Array(M * N);
for (let i = 0; i < 3000; i++) {
  b.setThreads(1 + (i % 4));
  b.gemm(a, w, c, 1, M, N, K, false, false, M * K, K * N);
  if (c[i % c.length] !== K) throw new Error('wrong product at iteration ' + i);
}
console.log('ok');
`;

describe.skipIf(!built)(`native thread pool${built ? '' : ' (skipped: the addon is not built)'}`, () => {
  it('products right after resizing the pool finish (no lost wake-up)', () => {
    const r = spawnSync(process.execPath, ['-e', child], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal, `the child hung (killed by ${r.signal}): the pool deadlocked`).toBeNull();
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ok');
    expect(r.status).toBe(0);
  });
});
