import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prebuildPath, prebuildTag, sourceBuildPath } from '../prebuild.mjs';

// The package's prebuilt addon, and its install step as a registry user's `npm install` runs it.
const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const prebuilt = prebuildPath(pkgDir);
const linuxX64 = process.platform === 'linux' && process.arch === 'x64';
const hasPrebuild = existsSync(prebuilt);
const objdump = spawnSync('objdump', ['--version']).status === 0;

const cmp = (a: string, b: string) => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
};
const older = (a: string, b: string) => cmp(a, b) <= 0;

/** Highest version of each symbol-version family (GLIBC, GLIBCXX, CXXABI) the binary needs. */
function neededVersions(file: string): Record<string, string> {
  const r = spawnSync('objdump', ['-T', file], { encoding: 'utf8' });
  const all: Record<string, string[]> = {};
  for (const m of r.stdout.matchAll(/\((GLIBC|GLIBCXX|CXXABI)_([\d.]+)\)/g)) (all[m[1]] ??= []).push(m[2]);
  return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v.sort(cmp).pop()!]));
}

describe('@peftjs/native prebuild', () => {
  it.runIf(linuxX64)('the build puts this platform\'s addon under prebuilds/linux-x64-glibc', () => {
    expect(prebuildTag()).toMatch(/^linux-x64-(glibc|musl)$/);
    expect(hasPrebuild, `${prebuilt} missing: run npm run build -w @peftjs/native`).toBe(true);
  });

  // glibc 2.27 (Ubuntu 18.04; Debian 10 and RHEL 8 have 2.28) and libstdc++ of GCC 6+: the build machine's
  // newer libraries must not leak in (GCC 12 binds condition_variable::wait to GLIBCXX_3.4.30 by itself)
  it.runIf(linuxX64 && hasPrebuild && objdump)('the linux prebuild needs nothing newer than glibc 2.27 and GLIBCXX 3.4.22', () => {
    const v = neededVersions(prebuilt);
    expect(v.GLIBC, JSON.stringify(v)).toBeDefined();
    expect(older(v.GLIBC, '2.27'), `GLIBC_${v.GLIBC}`).toBe(true);
    if (v.GLIBCXX) expect(older(v.GLIBCXX, '3.4.22'), `GLIBCXX_${v.GLIBCXX}`).toBe(true);
    if (v.CXXABI) expect(older(v.CXXABI, '1.3.10'), `CXXABI_${v.CXXABI}`).toBe(true);
  });

  // The built loader in a registry install with neither a prebuild nor a build from source: the status a
  // user sees (initBackend's report.native) says what to do.
  const dist = join(pkgDir, 'dist', 'index.js');
  it.runIf(existsSync(dist))('with no addon for the platform, the status says how to build one', () => {
    const root = mkdtempSync(join(tmpdir(), 'peftjs-native-loader-'));
    try {
      const dir = join(root, 'node_modules', '@peftjs', 'native');
      mkdirSync(dir, { recursive: true });
      for (const f of ['package.json', 'prebuild.mjs']) cpSync(join(pkgDir, f), join(dir, f));
      cpSync(join(pkgDir, 'dist'), join(dir, 'dist'), { recursive: true });
      // tfjs, as the consumer's install has it
      const tfjs = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs/package.json'));
      mkdirSync(join(root, 'node_modules', '@tensorflow'), { recursive: true });
      symlinkSync(tfjs, join(root, 'node_modules', '@tensorflow', 'tfjs')); // its own dependencies resolve from its real path
      const script = `const m = await import(${JSON.stringify(join(dir, 'dist', 'index.js'))}); console.log(JSON.stringify(m.nativeStatus()));`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      const status = JSON.parse(r.stdout.trim().split('\n').pop()!);
      expect(status.installed).toBe(false);
      expect(status.reason).toContain(`no native matmul for ${prebuildTag()}`);
      expect(status.reason).toMatch(/install a C\+\+ compiler .* then run `npm rebuild @peftjs\/native`/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  describe('install.mjs in a registry install (node_modules/@peftjs/native)', () => {
    let tmp = '';
    beforeAll(() => void (tmp = mkdtempSync(join(tmpdir(), 'peftjs-native-install-'))));
    afterAll(() => tmp && rmSync(tmp, { recursive: true, force: true }));
    let n = 0;
    /** A copy of the published files under node_modules, with or without the prebuild. */
    const installed = (prebuild: 'real' | 'none' | 'corrupt') => {
      const dir = join(tmp, String(n++), 'node_modules', '@peftjs', 'native');
      mkdirSync(join(dir, 'src'), { recursive: true });
      for (const f of ['package.json', 'install.mjs', 'build.mjs', 'prebuild.mjs']) cpSync(join(pkgDir, f), join(dir, f));
      cpSync(join(pkgDir, 'src', 'native'), join(dir, 'src', 'native'), { recursive: true });
      const target = prebuildPath(dir);
      if (prebuild !== 'none') mkdirSync(dirname(target), { recursive: true });
      if (prebuild === 'real') cpSync(prebuilt, target);
      if (prebuild === 'corrupt') writeFileSync(target, 'not an ELF file');
      return dir;
    };
    const run = (dir: string, env: Record<string, string> = {}) => spawnSync(process.execPath, ['install.mjs'], { cwd: dir, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });

    it.runIf(hasPrebuild)('does nothing when the prebuild for this machine loads', () => {
      const dir = installed('real');
      const r = run(dir, { CXX: '/nonexistent/c++' });
      expect(r.status).toBe(0);
      expect(r.stdout + r.stderr).toBe('');
      expect(existsSync(sourceBuildPath(dir))).toBe(false);
    });

    it('without a prebuild or a compiler: succeeds and says how to get the native matmul', () => {
      const dir = installed('none');
      const r = run(dir, { CXX: '/nonexistent/c++' });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`no prebuilt addon for ${prebuildTag()}`));
      expect(r.stdout).toMatch(/npm rebuild @peftjs\/native/);
      expect(existsSync(sourceBuildPath(dir))).toBe(false);
    });

    it('a prebuild this system cannot load: says why and falls back to the build', () => {
      const dir = installed('corrupt');
      const r = run(dir, { CXX: '/nonexistent/c++' });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/does not load here/);
      expect(r.stdout).toMatch(/npm rebuild @peftjs\/native/);
    });

    it.runIf(linuxX64 && spawnSync('g++', ['--version']).status === 0)('without a prebuild and with a compiler: builds build/peftjs_native.node from source, which loads', () => {
      const dir = installed('none');
      const r = run(dir);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/built .*build\/peftjs_native\.node/);
      const addon = createRequire(import.meta.url)(sourceBuildPath(dir));
      expect(addon.info().supportedIsas).toContain('scalar');
    });
  });
});
