// npm's install step for @peftjs/native. Never fails the install (the package is optional):
// - a prebuilt addon for this machine (prebuilds/<platform>-<arch>[-<libc>]/) that loads: nothing to do;
// - otherwise (another platform, a prebuild this system's libraries cannot load, or
//   PEFTJS_NATIVE_FROM_SOURCE=1): build from source into build/peftjs_native.node, if a C++ compiler and
//   Node's headers are there; if not, say what to do and exit 0 (peftjs then runs on plain wasm).
// In the peftjs repository itself `npm run build` makes the prebuild, so this does nothing there.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prebuildPath, prebuildTag, sourceBuildPath } from './prebuild.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const say = (msg) => console.log(`@peftjs/native: ${msg}`);

function main() {
  if (process.env.PEFTJS_NATIVE_BUILD === '0') return;
  if (!here.split(sep).includes('node_modules') && existsSync(join(here, 'src', 'native', 'gemm.cc')) && !process.env.PEFTJS_NATIVE_FROM_SOURCE) return; // the repository checkout
  const prebuilt = prebuildPath(here);
  if (existsSync(prebuilt) && process.env.PEFTJS_NATIVE_FROM_SOURCE !== '1') {
    try {
      createRequire(import.meta.url)(prebuilt);
      return; // the prebuild fits
    } catch (e) {
      say(`the prebuilt addon for ${prebuildTag()} does not load here (${String(e?.message ?? e).split('\n')[0]}); building from source`);
    }
  } else if (process.env.PEFTJS_NATIVE_FROM_SOURCE !== '1') {
    say(`no prebuilt addon for ${prebuildTag()} in this package; building from source`);
  }
  const r = spawnSync(process.execPath, [join(here, 'build.mjs'), '--out', sourceBuildPath(here)], { stdio: 'inherit' });
  if (r.status !== 0 || !existsSync(sourceBuildPath(here))) {
    say('not built: peftjs runs on tfjs\'s wasm kernels (slower). To get the native matmul, install a C++ compiler and Node\'s headers, then run `npm rebuild @peftjs/native`.');
  }
}

try {
  main();
} catch (e) {
  say(`install step skipped (${String(e?.message ?? e)})`);
}
process.exit(0);
