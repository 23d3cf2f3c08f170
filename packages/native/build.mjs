// Compiles the native matmul (src/native/gemm.cc) into a Node-API addon with the system's C++ compiler
// against Node's own headers.
//
//   node build.mjs                  → prebuilds/<platform>-<arch>[-<libc>]/peftjs_native.node (what a release
//                                     ships; `npm run build` runs it after tsup)
//   node build.mjs --out FILE       → FILE (install.mjs builds into build/ this way when no prebuild fits)
//   node build.mjs --strict         → exit 1 when it cannot build (CI's prebuild jobs), instead of 0
//
// Optional by design: without a compiler or the headers it says so and exits 0, and @peftjs/native then
// reports `installed: false` with the reason; everything runs on plain wasm.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prebuildPath, prebuildTag } from './prebuild.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outArg = args.indexOf('--out');
const out = outArg >= 0 ? resolve(args[outArg + 1]) : prebuildPath(here);
const strict = args.includes('--strict');
const src = join(here, 'src', 'native', 'gemm.cc');
const skip = (why) => {
  console.log(`@peftjs/native: the native matmul was not built for ${prebuildTag()} (${why}); it is optional: tfjs's wasm kernels are used instead.`);
  process.exit(strict ? 1 : 0);
};

if (process.env.PEFTJS_NATIVE_BUILD === '0') skip('PEFTJS_NATIVE_BUILD=0');
if (process.platform !== 'linux' && process.platform !== 'darwin') skip(`building is supported on Linux and macOS, this is ${process.platform}`);
if (!existsSync(src)) skip(`the source ${src} is missing`);

const includes = [
  process.env.PEFTJS_NODE_INCLUDE,
  resolve(process.execPath, '../../include/node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);
const include = includes.find((d) => existsSync(join(d, 'node_api.h')));
if (!include) {
  skip(`Node's headers (node_api.h) are not in ${includes.join(', ')}: use a Node from nodejs.org (it ships them) or your distribution's Node headers package, or set PEFTJS_NODE_INCLUDE`);
}

const compilers = process.env.CXX ? [process.env.CXX] : process.platform === 'darwin' ? ['clang++', 'c++'] : ['g++', 'c++', 'clang++'];
const cxx = compilers.find((c) => {
  const probe = spawnSync(c, ['--version'], { encoding: 'utf8' });
  return !probe.error && probe.status === 0;
});
if (!cxx) skip(`no C++ compiler (tried ${compilers.join(', ')}): install g++ or clang++, or set CXX`);

const flags = ['-O3', '-std=c++17', '-ffp-contract=off', '-shared', '-fPIC', '-pthread', '-fvisibility=hidden', '-DNODE_GYP_MODULE_NAME=peftjs_native', `-I${include}`];
// macOS links a shared object with Node-API symbols left for the loading node binary to provide
if (process.platform === 'darwin') flags.push('-undefined', 'dynamic_lookup');
// On Linux libstdc++ and libgcc stay dynamic: linking either statically pulls in the building machine's
// newest glibc symbols (pthread_* 2.34, _dl_find_object 2.35, arc4random 2.36), and gemm.cc pins the one
// newer libstdc++ symbol GCC 12 would bind, so the binary needs glibc 2.27 and GCC 6's libstdc++
// (src/prebuild.test.ts checks it with objdump).

mkdirSync(dirname(out), { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const t = Date.now();
const r = spawnSync(cxx, [...flags, src, '-o', tmp], { encoding: 'utf8' });
if (r.status !== 0) {
  rmSync(tmp, { force: true });
  process.stderr.write(r.stderr || String(r.error ?? ''));
  skip(`${cxx} failed (exit ${r.status})`);
}
renameSync(tmp, out); // a loader never sees a half-written addon
console.log(`@peftjs/native: built ${out} (${cxx}, ${Date.now() - t} ms)`);
