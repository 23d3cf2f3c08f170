import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeInfos, hostBackend, runBackendKernel, view2d, wasmHeapBackend, writeScalar } from './host';

// The one typed view of the cpu / wasm backends' data that JS kernels use.
describe(`host backend helpers on ${tf.getBackend()}`, () => {
  it('hostBackend accepts the active CPU backend and names the kernel when given anything else', () => {
    expect(hostBackend(tf.backend())).toBe(tf.backend());
    expect(() => hostBackend({ device: {} }, 'peftjs.Test')).toThrow(/peftjs\.Test: backend .* does not keep tensors in host memory/);
    expect(() => hostBackend(null)).toThrow(/host memory/);
  });

  it('wasmHeapBackend: the heap API on wasm only, and its views are the tensor’s data', async () => {
    const heap = wasmHeapBackend(tf.backend());
    expect(heap !== undefined).toBe(tf.getBackend() === 'wasm');
    if (!heap) return;
    const t = tf.tensor2d([[1, 2], [3, 4]]);
    expect(Array.from(heap.typedArrayFromHeap(t as unknown as tf.TensorInfo))).toEqual([1, 2, 3, 4]);
    t.dispose();
  });

  it('runBackendKernel, view2d, writeScalar and disposeInfos compose a kernel that leaks nothing', async () => {
    const be = tf.backend();
    const x = tf.tensor3d([1, 2, 3, 4, 5, 6], [1, 2, 3]);
    // backend data, not engine tensors: what a kernel's intermediates would leak
    const dataIds = () => (be as unknown as { numDataIds(): number }).numDataIds();
    const before = dataIds();
    const s = writeScalar(be, 2);
    const info = x as unknown as tf.TensorInfo;
    const y = runBackendKernel('Multiply', be, { a: view2d(info), b: s });
    expect(y.shape).toEqual([2, 3]);
    expect(Array.from(hostBackend(be).readSync(y.dataId))).toEqual([2, 4, 6, 8, 10, 12]);
    expect(dataIds()).toBe(before + 2);
    disposeInfos(be, s, y);
    expect(dataIds()).toBe(before);
    expect(() => runBackendKernel('NoSuchKernel', be, {})).toThrow(/kernel NoSuchKernel is missing on backend/);
    x.dispose();
  });
});
