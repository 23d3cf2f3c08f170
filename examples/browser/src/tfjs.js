// What the bundle gets for '@tensorflow/tfjs' (build.mjs aliases it here): tfjs-core with its gradients, its
// chained tensor methods (t.reshape …)
// and the cpu backend — the parts peftjs uses — without tfjs-layers, -converter, -data and the webgl
// backend that the union package also brings (about 550 kB minified). The wasm and webgpu backends come
// from @peftjs/core/browser. An app that wants webgl in initBackend's order imports
// '@tensorflow/tfjs-backend-webgl' here too.
export * from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops';
import '@tensorflow/tfjs-backend-cpu';
