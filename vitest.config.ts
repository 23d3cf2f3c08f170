import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';
import { readdirSync, existsSync } from 'node:fs';

// Tests import packages by name; point those names at the sources so a test never runs stale dist/.
const pkgDir = fileURLToPath(new URL('./packages/', import.meta.url));
// a subpath export first: an alias also matches the names below it (`@peftjs/core` would take `@peftjs/core/testing`)
const alias: Record<string, string> = {
  '@peftjs/core/testing': `${pkgDir}core/src/testing/index.ts`,
  '@peftjs/core/browser': `${pkgDir}core/src/browser.ts`,
};
for (const dir of readdirSync(pkgDir)) {
  const entry = `${pkgDir}${dir}/src/index.ts`;
  if (!existsSync(entry)) continue;
  alias[dir === 'peftjs' ? 'peftjs' : `@peftjs/${dir}`] = entry;
}

const shared = {
  testTimeout: 120_000,
  hookTimeout: 120_000,
  setupFiles: ['tools/testing/setup.ts'],
  pool: 'forks' as const,
};

export default defineConfig({
  resolve: { alias },
  test: {
    maxWorkers: 2,
    // Every test runs on wasm (the CPU default); the numerics that HF parity rests on run again on the
    // plain cpu backend.
    projects: [
      {
        resolve: { alias },
        test: { ...shared, name: 'wasm', include: ['packages/*/src/**/*.test.ts', 'tools/**/*.test.ts', 'examples/**/*.test.ts'], env: { PEFTJS_TEST_BACKEND: 'wasm' } },
      },
      {
        resolve: { alias },
        test: {
          ...shared,
          name: 'cpu',
          include: ['packages/{core,models,lora,adapters,prompt,prefix,ptuning,ia3,ln-tuning,bitfit}/src/**/*.test.ts'],
          exclude: ['**/webgpu*.test.ts', '**/node_modules/**'],
          env: { PEFTJS_TEST_BACKEND: 'cpu' },
        },
      },
    ],
  },
});
