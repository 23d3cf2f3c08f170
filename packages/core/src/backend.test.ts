import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { BROWSER_BACKEND_ORDER, initBackend, summarizeAdapter } from './backend';
import { PeftError } from './errors';
import { browserBackends } from '@peftjs/core/browser';

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

  it('takes the backend modules handed in (a bundle), as a module or a function returning one', async () => {
    const before = tf.getBackend();
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    expect((await initBackend({ prefer: 'wasm', backends: { wasm }, native: false })).backend).toBe('wasm');
    let called = 0;
    const lazy = async () => (called++, wasm);
    expect((await initBackend({ prefer: 'wasm', backends: { wasm: lazy }, native: false })).backend).toBe('wasm');
    expect(called).toBe(1);
    // not a module: that backend is passed over, naming the option
    const r = await initBackend({ prefer: ['wasm', 'cpu'], backends: { wasm: 42 } });
    expect(r.backend).toBe('cpu');
    expect(r.attempts[0].reason).toMatch(/backends\.wasm is not a module/);
    await tf.setBackend(before);
  });

  it('@peftjs/core/browser holds both backend modules, imported statically', async () => {
    const { wasm, webgpu } = browserBackends as { wasm: Record<string, unknown>; webgpu: Record<string, unknown> };
    expect(typeof wasm.setWasmPaths).toBe('function');
    expect(typeof webgpu.WebGPUBackend).toBe('function');
    const before = tf.getBackend();
    expect((await initBackend({ prefer: 'wasm', backends: browserBackends, native: false })).backend).toBe('wasm');
    await tf.setBackend(before);
  });

  it('checks wasmPaths; knows webgl is for browsers, whose order it is in', async () => {
    await expect(initBackend({ prefer: 'cpu', wasmPaths: 3 as never })).rejects.toThrow(/wasmPaths must be a folder URL or a map/);
    await expect(initBackend({ prefer: 'cpu', wasmPaths: { 'tfjs-backend-wasm.wasm': 1 } as never })).rejects.toSatisfy(PeftError.isInstance);
    const before = tf.getBackend();
    const r = await initBackend({ prefer: ['webgl', 'cpu'] });
    expect(r.attempts[0]).toMatchObject({ backend: 'webgl', ok: false, reason: expect.stringMatching(/only in a browser/) });
    expect(BROWSER_BACKEND_ORDER).toEqual(['webgpu', 'webgl', 'wasm', 'cpu']);
    await tf.setBackend(before);
  });

  it('tells a software GPU adapter from a hardware one', () => {
    expect(summarizeAdapter({ info: { vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: 'llvmpipe: Mesa 25' } }).isSoftware).toBe(true);
    expect(summarizeAdapter({ info: { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H200' } }).isSoftware).toBe(false);
  });
});
