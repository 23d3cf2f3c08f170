import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';
import { readdirSync, existsSync } from 'node:fs';

// Tests import packages by name; point those names at the sources so a test never runs stale dist/.
const pkgDir = fileURLToPath(new URL('./packages/', import.meta.url));
const alias: Record<string, string> = {};
for (const dir of readdirSync(pkgDir)) {
  const entry = `${pkgDir}${dir}/src/index.ts`;
  if (!existsSync(entry)) continue;
  alias[dir === 'peftjs' ? 'peftjs' : `@peftjs/${dir}`] = entry;
}

export default defineConfig({
  resolve: { alias },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'tools/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    setupFiles: ['tools/testing/setup.ts'],
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
