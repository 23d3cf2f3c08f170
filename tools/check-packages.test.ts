import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// @ts-expect-error plain ESM tool scripts (no .d.ts)
import { checkPackage, lintPacked } from './check-packages.mjs';
// @ts-expect-error plain ESM tool scripts (no .d.ts)
import { ROOT, workspacePackages } from './packages.mjs';

type Pkg = { dir: string; path: string; pkg: Record<string, unknown> };
const packages: Pkg[] = workspacePackages();

describe('packages are ready to publish', () => {
  it('every package.json has the fields, LICENSE, README, sideEffects and exports a registry user needs', () => {
    expect(packages.length).toBeGreaterThanOrEqual(15);
    const problems = packages.flatMap((p) => checkPackage(p.path) as string[]);
    expect(problems).toEqual([]);
  });

  it('a package that misses them is told which field, in which file', () => {
    const root = mkdtempSync(join(tmpdir(), 'peftjs-check-'));
    try {
      copyFileSync(join(ROOT, 'LICENSE'), join(root, 'LICENSE'));
      const dir = join(root, 'packages', 'newmethod');
      mkdirSync(join(dir, 'src'), { recursive: true });
      writeFileSync(join(dir, 'src', 'index.ts'), "import { registerPeftMethod } from '@peftjs/core';\nregisterPeftMethod(method);\n");
      writeFileSync(
        join(dir, 'package.json'),
        JSON.stringify({
          name: '@peftjs/newmethod',
          version: '0.1.0',
          description: 'a method package made without the checklist',
          license: 'MIT',
          type: 'module',
          sideEffects: false,
          types: './dist/index.d.ts',
          exports: {
            '.': { import: { default: './dist/index.js', types: './dist/index.d.ts' }, require: { types: './dist/index.d.cts', default: './dist/index.cjs' } },
            './extra': { import: { types: './dist/extra.d.ts', default: './dist/extra.js' }, require: { types: './dist/extra.d.cts', default: './dist/extra.cjs' } },
            './package.json': './package.json',
          },
          files: ['dist'],
          optionalDependencies: { webgpu: '^0.6.2' },
        }),
      );
      const problems: string[] = checkPackage(dir, { root });
      const at = (field: string) => problems.find((p) => p.startsWith(`packages/newmethod/package.json: ${field}`));
      expect(at('license'), problems.join('\n')).toMatch(/"MIT", expected "Apache-2.0"/);
      expect(at('LICENSE')).toMatch(/no LICENSE file/);
      expect(at('files')).toMatch(/"README.md"|"LICENSE"/);
      expect(at('repository')).toMatch(/directory: "packages\/newmethod"/);
      for (const f of ['homepage', 'bugs.url', 'keywords', 'engines.node', 'README.md']) expect(at(f), f).toBeDefined();
      expect(at('sideEffects')).toMatch(/is false but src\/index\.ts register/);
      expect(at('exports["."].import')).toMatch(/"types" must come first/);
      expect(at('typesVersions')).toMatch(/"extra"/);
      expect(at('optionalDependencies.webgpu')).toMatch(/optional peer/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('a bare side-effect import of a file sideEffects does not list is named (the bundler would drop it)', () => {
    const root = mkdtempSync(join(tmpdir(), 'peftjs-check-'));
    try {
      const dir = join(root, 'packages', 'quantish');
      mkdirSync(join(dir, 'src'), { recursive: true });
      writeFileSync(join(dir, 'src', 'index.ts'), "export { layer } from './layer';\n");
      writeFileSync(join(dir, 'src', 'layer.ts'), "import './webgpu';\nexport const layer = 1;\n");
      writeFileSync(join(dir, 'src', 'webgpu.ts'), "import { registerFastPath } from '@peftjs/core';\nregisterFastPath(op, {});\n");
      const pkg = (sideEffects: string[]) => writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: '@peftjs/quantish', sideEffects }));
      pkg(['./src/index.ts', './dist/index.js']);
      const sideEffects = (checkPackage(dir, { root }) as string[]).filter((p) => p.includes(': sideEffects:'));
      expect(sideEffects.join('\n')).toMatch(/does not list src\/webgpu\.ts, which src\/layer\.ts imports for its side effects/);
      pkg(['./src/index.ts', './src/webgpu.ts', './dist/index.js']);
      expect((checkPackage(dir, { root }) as string[]).filter((p) => p.includes('imports for its side effects'))).toEqual([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  // Needs every package built (CI builds before the tests); publint and attw read the packed tarballs.
  const built = packages.every((p) => existsSync(join(p.path, 'dist')));
  it.runIf(built || process.env.CI)(
    `publint and @arethetypeswrong/cli find nothing in any packed package${built ? '' : ' (packages not built)'}`,
    async () => {
      const dest = mkdtempSync(join(tmpdir(), 'peftjs-pack-'));
      try {
        const report: Record<string, string[]> = await lintPacked(dest);
        expect(Object.keys(report).sort()).toEqual(packages.map((p) => p.pkg.name as string).sort());
        expect(Object.entries(report).filter(([, l]) => l.length)).toEqual([]);
      } finally {
        rmSync(dest, { recursive: true, force: true });
      }
    },
    600_000,
  );
});
