import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prebuildPath } from '../prebuild.mjs';

// The addon's thread pool: a product that starts right after setThreads() created new workers must not
// wait for a worker that has not been scheduled yet. A deadlock here blocks Node's event loop (vitest's
// own timeouts cannot fire), so the loop runs in a child process with a deadline.
const addon = prebuildPath(join(dirname(fileURLToPath(import.meta.url)), '..'));
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

// Products whose packed operands exceed the pack budget run in chunks (columns, rows, batch entries), each
// packed once: with a budget of a few thousand floats every chunking path runs, checked against a plain
// triple loop in double precision.
const chunked = `
const b = require(${JSON.stringify(addon)});
let s = 7;
const rnd = (n) => Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 31) - 1);
let worst = 0;
for (const [batch, M, N, K, ta, tb, bcastA] of [[1, 37, 301, 70, 0, 0, 0], [3, 50, 40, 300, 1, 0, 0], [2, 129, 33, 65, 0, 1, 1], [5, 8, 200, 19, 1, 1, 0], [1, 300, 8, 40, 0, 1, 0]]) {
  for (const threads of [1, 3]) {
    b.setThreads(threads);
    const sa = bcastA ? 0 : M * K;
    const A = rnd(bcastA ? M * K : batch * M * K), B = rnd(batch * K * N), C = new Float32Array(batch * M * N);
    b.gemm(A, B, C, batch, M, N, K, !!ta, !!tb, sa, K * N);
    for (let e = 0; e < batch; e++)
      for (let i = 0; i < M; i++)
        for (let j = 0; j < N; j++) {
          let ref = 0;
          for (let k = 0; k < K; k++) ref += (ta ? A[e * sa + k * M + i] : A[e * sa + i * K + k]) * (tb ? B[e * K * N + j * K + k] : B[e * K * N + k * N + j]);
          worst = Math.max(worst, Math.abs(C[e * M * N + i * N + j] - ref) / Math.sqrt(K));
        }
  }
}
console.log(worst);
`;

describe.skipIf(!built)(`native matmul in chunks${built ? '' : ' (skipped: the addon is not built)'}`, () => {
  it('products larger than the pack budget equal a plain triple loop (every transpose, batches, a broadcast A)', () => {
    const r = spawnSync(process.execPath, ['-e', chunked], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PEFTJS_NATIVE_PACK_BUDGET: '3000' } });
    expect(r.stderr).toBe('');
    const worst = Number(r.stdout.trim());
    expect(worst, r.stdout).toBeLessThan(1e-5);
  });
});
