// The workspace's publishable packages, and packing them as npm would publish them. Used by
// tools/check-packages.mjs (fields, publint, attw) and tools/consumer-install.mjs.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Where the source lives; every package.json's repository, homepage and bugs point here. */
export const REPO_URL = 'https://github.com/peftjs/peftjs';

/** Every packages/<dir> with a package.json that is not private: { dir, path, pkg }. */
export function workspacePackages(root = ROOT) {
  const out = [];
  for (const dir of readdirSync(join(root, 'packages')).sort()) {
    const file = join(root, 'packages', dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8'));
    if (pkg.private) continue;
    out.push({ dir, path: join(root, 'packages', dir), pkg });
  }
  return out;
}

/**
 * `npm pack`s every package into `dest` (install scripts not run, as npm publish packs; one npm process for
 * all of them) and returns { name, dir, tarball, files } for each of `packages`. Needs the packages built.
 */
export function packAll(dest, packages = workspacePackages()) {
  mkdirSync(dest, { recursive: true });
  const json = execFileSync('npm', ['pack', '--workspaces', '--json', '--ignore-scripts', '--pack-destination', dest], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  const byName = new Map(JSON.parse(json).map((info) => [info.name, info]));
  return packages.map((p) => {
    const info = byName.get(p.pkg.name);
    if (!info) throw new Error(`npm pack --workspaces made no tarball for ${p.pkg.name}`);
    return { name: p.pkg.name, dir: p.dir, tarball: join(dest, info.filename), files: info.files.map((f) => f.path) };
  });
}
