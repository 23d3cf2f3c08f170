import { defineConfig, type Options } from 'tsup';

/** Shared build for every package: ESM + CJS + .d.ts from src/index.ts, dependencies left external. */
export function packageConfig(extra: Partial<Options> = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    platform: 'neutral',
    treeshake: true,
    ...extra,
  });
}
