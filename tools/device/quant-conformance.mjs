// peftjs.Dequant4bitMatMul's WGSL fast path against its tfjs reference on the webgpu adapter of this machine
// (the H200 on the device machine; packages/quant/src/webgpu.test.ts runs the small shapes on lavapipe in CI):
// forward and dx, nf4/fp4, ± double quantisation, the test's odd shapes and the Qwen2-0.5B layer shapes.
//   source .device/setup.sh && node tools/device/quant-conformance.mjs
import * as tf from '@tensorflow/tfjs';
import { checkConformance, initBackend } from '@peftjs/core';
import { Linear4bit, dequant4bitMatMulOp, quantizeState } from '@peftjs/quant';

const report = await initBackend({ prefer: 'webgpu' });
if (tf.getBackend() !== 'webgpu') throw new Error(`no webgpu adapter: ${report.reason}`);
console.error(`backend webgpu: ${report.reason}`);
let seed = 11;
const host = (n) => {
  const a = new Float32Array(n);
  let s = seed++ * 7919;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    a[i] = ((s / 2147483648) * 2 - 1) * 0.08;
  }
  return a;
};
const cases = [
  [1, 7, 5, 'nf4', true], [3, 33, 65, 'fp4', false], [19, 40, 129, 'nf4', false], [37, 130, 300, 'fp4', true], [5, 256, 688, 'nf4', true],
  // Qwen2-0.5B: q/o [896, 896], k/v [128, 896], gate/up [4864, 896], down [896, 4864]; rows = batch × tokens
  [1024, 896, 896, 'nf4', true], [1024, 128, 896, 'nf4', true], [1024, 4864, 896, 'nf4', true], [1024, 896, 4864, 'nf4', true], [1, 4864, 896, 'fp4', false],
];
let failed = 0;
for (const [m, outF, inF, qt, dq] of cases) {
  for (const transW of [false, true]) {
    const state = quantizeState(host(outF * inF), qt, dq);
    const layer = Linear4bit.fromState(state, outF, inF);
    const w = layer.weightInputs();
    const attrs = { outFeatures: outF, inFeatures: inF, quantType: qt, offset: layer.offset, transW };
    const r = await checkConformance(
      dequant4bitMatMulOp,
      () => ({ x: tf.randomNormal([m, transW ? outF : inF], 0, 1, 'float32', seed++), ...Object.fromEntries(Object.entries(w).map(([k, v]) => [k, tf.clone(v)])) }),
      attrs,
    );
    const line = { op: 'Dequant4bitMatMul', x: [m, transW ? outF : inF], w: [outF, inF], quant: qt + (dq ? '+dq' : ''), transW, backend: r.backend, forwardMaxAbsDiff: r.forwardMaxAbsDiff, gradXMaxAbsDiff: r.gradMaxAbsDiff.x, ok: r.ok };
    console.log(JSON.stringify(line));
    if (!r.ok || r.backend !== 'webgpu') failed++;
    layer.dispose();
  }
}
console.log(`${2 * cases.length - failed} passed, ${failed} failed (Dequant4bitMatMul conformance on webgpu)`);
process.exit(failed ? 1 : 0);
