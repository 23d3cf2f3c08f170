// Compiles the optional native matmul (src/native/gemm.cc) into dist/peftjs_native.node with g++ against
// Node's own headers. Runs after tsup (whose `clean` empties dist/). Optional: when the platform, the
// compiler or the headers are missing, it says so and exits 0; @peftjs/native then reports
// `installed: false` and everything runs on plain wasm.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist', 'peftjs_native.node');
const src = join(here, 'src', 'native', 'gemm.cc');
const skip = (why) => {
  console.log(`@peftjs/native: native matmul not built (${why}); optional, tfjs's wasm kernels are used instead.`);
  process.exit(0);
};

if (process.env.PEFTJS_NATIVE_BUILD === '0') skip('PEFTJS_NATIVE_BUILD=0');
if (process.platform !== 'linux' || process.arch !== 'x64') skip(`only linux x64 is supported, this is ${process.platform} ${process.arch}`);

const includes = [
  process.env.PEFTJS_NODE_INCLUDE,
  resolve(process.execPath, '../../include/node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);
const include = includes.find((d) => existsSync(join(d, 'node_api.h')));
if (!include) skip(`Node's headers (node_api.h) not found in ${includes.join(', ')}; set PEFTJS_NODE_INCLUDE`);

const cxx = process.env.CXX || 'g++';
const probe = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
if (probe.error || probe.status !== 0) skip(`no C++ compiler (${cxx}); install g++ or set CXX`);

mkdirSync(dirname(out), { recursive: true });
const args = ['-O3', '-std=c++17', '-ffp-contract=off', '-shared', '-fPIC', '-pthread', '-fvisibility=hidden', '-DNODE_GYP_MODULE_NAME=peftjs_native', `-I${include}`, src, '-o', out];
const t = Date.now();
const r = spawnSync(cxx, args, { encoding: 'utf8' });
if (r.status !== 0) {
  rmSync(out, { force: true });
  process.stderr.write(r.stderr || String(r.error ?? ''));
  skip(`${cxx} failed (exit ${r.status})`);
}
console.log(`@peftjs/native: built ${out} (${cxx}, ${Date.now() - t} ms)`);
