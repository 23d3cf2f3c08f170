// The CPU cost of one dispatch on the webgpu backend: N tiny element-wise ops through tfjs (its program
// path: shader key, uniforms, bind group) and through core's runWgsl, each timed to an awaited read.
//   npm run build && node bench/webgpu-dispatch.mjs [--n 5000]
import * as tf from '@tensorflow/tfjs';
import { initBackend, runWgsl, dispatch1d, toTensor } from '@peftjs/core';

const argv = process.argv.slice(2);
const N = Number(argv[argv.indexOf('--n') + 1] || 5000);
const report = await initBackend({ prefer: 'webgpu' });
const x = tf.randomNormal([1024]);
const kernel = {
  key: 'bench-axpy',
  code: () => `
    @group(0) @binding(0) var<storage, read_write> y: array<f32>;
    @group(0) @binding(1) var<storage, read> x: array<f32>;
    @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
      if (g.x < 1024u) { y[g.x] = x[g.x] * 1.0001 + 0.5; }
    }`,
};
async function time(label, f) {
  for (let i = 0; i < 50; i++) f(); // warm-up
  await tf.slice(x, 0, 1).data();
  const t = performance.now();
  for (let i = 0; i < N; i++) f();
  const t1 = performance.now();
  await tf.slice(x, 0, 1).data();
  const t2 = performance.now();
  console.log(JSON.stringify({ bench: 'webgpu-dispatch', path: label, n: N, cpuUsPerDispatch: Number(((1000 * (t1 - t)) / N).toFixed(2)), wallUsPerDispatch: Number(((1000 * (t2 - t)) / N).toFixed(2)) }));
}
await time('tfjs Add', () => tf.add(x, 0.5).dispose());
await time('runWgsl', () => toTensor(runWgsl(undefined, kernel, { inputs: [x], outputs: [{ shape: [1024], dtype: 'float32' }], workgroups: dispatch1d(1024, 256) })[0]).dispose());
console.log(JSON.stringify({ adapter: report.adapter, reason: report.reason }));
