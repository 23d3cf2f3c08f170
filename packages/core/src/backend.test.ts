import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend, summarizeAdapter } from './backend';
import { PeftError } from './errors';

describe('initBackend', () => {
  it('takes an explicit backend and reports why', async () => {
    const before = tf.getBackend();
    const r = await initBackend({ prefer: 'cpu' });
    expect(r.backend).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(r.reason).toMatch(/CPU/);
    const w = await initBackend({ prefer: ['tensorflow', 'wasm'] });
    expect(w.backend).toBe('wasm');
    expect(w.attempts[0]).toMatchObject({ backend: 'tensorflow', ok: false });
    expect(w.attempts[0].reason).toMatch(/not installed/);
    await tf.setBackend(before);
  });

  it('refuses an unknown backend by name', async () => {
    await expect(initBackend({ prefer: 'tpu' as never })).rejects.toThrow(/unknown backend "tpu"/);
    await expect(initBackend({ prefer: 'tpu' as never })).rejects.toSatisfy(PeftError.isInstance);
  });

  it('tells a software GPU adapter from a hardware one', () => {
    expect(summarizeAdapter({ info: { vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: 'llvmpipe: Mesa 25' } }).isSoftware).toBe(true);
    expect(summarizeAdapter({ info: { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H200' } }).isSoftware).toBe(false);
  });
});
