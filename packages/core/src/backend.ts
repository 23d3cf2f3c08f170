import * as tf from '@tensorflow/tfjs';
import { PeftError } from './errors';
import { ensureWasmKernels } from './kernels/wasm';
import { setBackendFastPaths } from './kernels/registry';
import { MATMUL_LAYOUT } from './kernels/cpu';
import { installWebgpuElementwise } from './kernels/webgpu/elementwise';
import { probeDawnAdapter } from './dawn_probe';

export type BackendName = 'tensorflow' | 'webgpu' | 'webgl' | 'wasm' | 'cpu';
/** The order initBackend tries in Node. */
export const BACKEND_ORDER: BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu'];
/** The order initBackend tries in a browser or a Web Worker (tfjs-node does not exist there; webgl does). */
export const BROWSER_BACKEND_ORDER: BackendName[] = ['webgpu', 'webgl', 'wasm', 'cpu'];
const ALL_BACKENDS: BackendName[] = ['tensorflow', 'webgpu', 'webgl', 'wasm', 'cpu'];

/**
 * Backend modules handed to initBackend instead of the dynamic imports it does in Node, which a bundler
 * cannot see: the module namespace of `@tensorflow/tfjs-backend-wasm` / `-webgpu` (`import * as wasm
 * from …`), or a function returning it (`() => import('@tensorflow/tfjs-backend-wasm')`, a bundler's
 * lazy chunk). `browserBackends` from `@peftjs/core/browser` has both, imported statically.
 */
export interface BackendModules {
  wasm?: unknown;
  webgpu?: unknown;
}

export interface GpuAdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation of the GPU API (Mesa lavapipe/llvmpipe, SwiftShader): correct but slower than wasm. */
  isSoftware: boolean;
}

export interface BackendReport {
  backend: BackendName;
  /** Why this backend was chosen, in words. */
  reason: string;
  adapter?: GpuAdapterSummary;
  /** Every backend tried, in order, and why it was or was not taken. */
  attempts: { backend: BackendName; ok: boolean; reason: string }[];
  /** On wasm in Node: whether `@peftjs/native`'s matmul is in use, and why (not). */
  native?: { installed: boolean; reason: string; threads: number; isa: string; origin?: 'prebuild' | 'source'; file?: string };
}

export interface InitBackendOptions {
  /** Backends to try, in order (default: PEFTJS_BACKEND, else tensorflow, webgpu, wasm, cpu). */
  prefer?: BackendName | BackendName[];
  /** Accept a software GPU adapter (lavapipe) for webgpu; default PEFTJS_ALLOW_SOFTWARE_GPU=1, else false. */
  allowSoftwareGpu?: boolean;
  /**
   * On wasm in Node, run matmuls through the optional `@peftjs/native` addon (multi-threaded AVX-512/AVX2)
   * when it is installed and built; default true unless PEFTJS_NATIVE=0.
   */
  native?: boolean;
  /** Backend modules to use instead of dynamic imports (a browser bundle: see `BackendModules`). */
  backends?: BackendModules;
  /**
   * Where the wasm backend fetches its `.wasm` binaries: a folder URL ending in `/`, or a map from file
   * name (`tfjs-backend-wasm-simd.wasm`, …) to URL; tfjs-backend-wasm's `setWasmPaths`. Needed in a
   * bundle, whose script sits where the binaries are not. Only before the wasm backend first starts.
   */
  wasmPaths?: string | Record<string, string>;
}

const dynamicImport = (name: string): Promise<any> => import(/* @vite-ignore */ name);
const env = (k: string): string | undefined => (typeof process !== 'undefined' ? process.env?.[k] : undefined);
const isNode = typeof process !== 'undefined' && !!(process as any).versions?.node;

const BACKEND_PACKAGES = { wasm: '@tensorflow/tfjs-backend-wasm', webgpu: '@tensorflow/tfjs-backend-webgpu' } as const;

/** A backend's module: the one handed in (`backends`), else a dynamic import (Node, or an unbundled page). */
async function backendModule(name: keyof BackendModules, given: BackendModules | undefined): Promise<any> {
  const m = given?.[name];
  if (m !== undefined && m !== null) {
    const mod = typeof m === 'function' ? await (m as () => unknown)() : m;
    if (!mod || typeof mod !== 'object') throw new PeftError('INVALID_ARGUMENT', `initBackend: backends.${name} is not a module (pass \`import * as ${name} from '${BACKEND_PACKAGES[name]}'\` or a function returning it)`);
    return mod;
  }
  try {
    return await dynamicImport(BACKEND_PACKAGES[name]);
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0];
    if (isNode) throw e;
    throw new Error(`${BACKEND_PACKAGES[name]} cannot be imported here (${msg}); in a bundle pass initBackend({ backends: browserBackends }) from '@peftjs/core/browser'`);
  }
}

/** The WebGL renderer's name, from a throwaway context (undefined when there is no WebGL). */
function webglRenderer(): string | undefined {
  const g = globalThis as any;
  let canvas: any;
  if (typeof g.OffscreenCanvas === 'function') canvas = new g.OffscreenCanvas(1, 1);
  else if (g.document?.createElement) canvas = g.document.createElement('canvas');
  const gl = canvas?.getContext('webgl2') ?? canvas?.getContext('webgl');
  if (!gl) return undefined;
  const ext = gl.getExtension('WEBGL_debug_renderer_info');
  const name = String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER) ?? '');
  gl.getExtension('WEBGL_lose_context')?.loseContext();
  return name;
}

/** Summarizes a GPUAdapter and decides whether it is a software implementation. */
export function summarizeAdapter(adapter: any): GpuAdapterSummary {
  const info = adapter?.info ?? {};
  const s = {
    vendor: String(info.vendor ?? ''),
    architecture: String(info.architecture ?? ''),
    device: String(info.device ?? ''),
    description: String(info.description ?? ''),
  };
  const text = `${s.architecture} ${s.device} ${s.description}`.toLowerCase();
  const isSoftware = adapter?.isFallbackAdapter === true || /software|llvmpipe|lavapipe|swiftshader|warp/.test(text);
  return { ...s, isSoftware };
}

const softwareGpuReason = (s: GpuAdapterSummary) => `WebGPU adapter is software (${s.description || s.device}), slower than wasm; pass allowSoftwareGpu to use it`;

let gpuPromise: Promise<any> | undefined;
/** navigator.gpu in a browser; the `webgpu` package's Dawn in Node (installed on globalThis for tfjs). */
async function getGpu(): Promise<any> {
  const nav = (globalThis as any).navigator;
  if (nav?.gpu) return nav.gpu;
  if (!isNode) return undefined;
  gpuPromise ??= (async () => {
    const { create, globals } = await dynamicImport('webgpu');
    Object.assign(globalThis, globals);
    const gpu = create([]);
    const g = globalThis as any;
    if (!g.navigator) g.navigator = {};
    Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    return gpu;
  })();
  return gpuPromise;
}

/** Installs `@peftjs/native`'s matmul kernels on the wasm backend when the package is there (optional). */
async function tryNative(want: boolean): Promise<NonNullable<BackendReport['native']>> {
  const off = (reason: string) => ({ installed: false, reason, threads: 0, isa: '' });
  try {
    const mod = await dynamicImport('@peftjs/native');
    if (!want) {
      mod.uninstallNativeKernels(); // an earlier initBackend may have installed them
      return off('turned off (native: false or PEFTJS_NATIVE=0)');
    }
    return mod.installNativeKernels();
  } catch (e) {
    if (!want) return off('turned off (native: false or PEFTJS_NATIVE=0)');
    return off(`@peftjs/native is not available (${(e as Error).message.split('\n')[0]})`);
  }
}

interface TryOptions {
  allowSoftwareGpu: boolean;
  nativeWanted: boolean;
  backends?: BackendModules;
  wasmPaths?: string | Record<string, string>;
}

async function tryBackend(name: BackendName, o: TryOptions): Promise<{ ok: boolean; reason: string; adapter?: GpuAdapterSummary; native?: BackendReport['native'] }> {
  const { allowSoftwareGpu, nativeWanted } = o;
  try {
    switch (name) {
      case 'tensorflow': {
        if (!isNode) return { ok: false, reason: 'tfjs-node runs only in Node' };
        let loaded = '';
        for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
          try {
            await dynamicImport(pkg);
            loaded = pkg;
            break;
          } catch {
            /* not installed */
          }
        }
        if (!loaded) return { ok: false, reason: '@tensorflow/tfjs-node(-gpu) is not installed (optional: its install downloads libtensorflow)' };
        if (!(await tf.setBackend('tensorflow'))) return { ok: false, reason: `${loaded} loaded but the backend failed to initialise` };
        return { ok: true, reason: `${loaded} (native TensorFlow) is installed` };
      }
      case 'webgpu': {
        // Dawn, once loaded, writes warnings to stderr: when it might not be taken, ask it in a child first
        if (isNode && !gpuPromise && !(globalThis as any).navigator?.gpu && !o.allowSoftwareGpu) {
          const probe = await probeDawnAdapter();
          if (probe && !probe.adapter) return { ok: false, reason: probe.reason };
          const summary = probe?.adapter && summarizeAdapter(probe.adapter);
          if (summary?.isSoftware) return { ok: false, reason: softwareGpuReason(summary), adapter: summary };
        }
        const gpu = await getGpu();
        if (!gpu) return { ok: false, reason: 'no WebGPU (navigator.gpu missing and the `webgpu` package unavailable)' };
        const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
        if (!adapter) return { ok: false, reason: 'WebGPU found no adapter (no Vulkan/Metal/D3D12 driver?)' };
        const summary = summarizeAdapter(adapter);
        if (summary.isSoftware && !allowSoftwareGpu) {
          return { ok: false, reason: softwareGpuReason(summary), adapter: summary };
        }
        const mod = await backendModule('webgpu', o.backends);
        registerWebgpuBackend(mod, adapter);
        if (!(await tf.setBackend('webgpu'))) return { ok: false, reason: 'the tfjs webgpu backend failed to initialise', adapter: summary };
        installWebgpuElementwise();
        return { ok: true, reason: `WebGPU adapter ${summary.vendor || '?'} ${summary.description || summary.device}${summary.isSoftware ? ' (software, as asked)' : ''}`, adapter: summary };
      }
      case 'webgl': {
        if (isNode) return { ok: false, reason: 'WebGL exists only in a browser' };
        const renderer = webglRenderer();
        if (renderer === undefined) return { ok: false, reason: 'no WebGL context (WebGL off, or no GPU)' };
        const software = /swiftshader|llvmpipe|lavapipe|software|basic render/i.test(renderer);
        if (software && !allowSoftwareGpu) return { ok: false, reason: `WebGL renderer is software (${renderer}), slower than wasm; pass allowSoftwareGpu to use it` };
        if (!tf.engine().registryFactory['webgl']) return { ok: false, reason: 'the tfjs webgl backend is not registered (import @tensorflow/tfjs)' };
        if (!(await tf.setBackend('webgl'))) return { ok: false, reason: 'the tfjs webgl backend failed to initialise' };
        return { ok: true, reason: `WebGL ${renderer}${software ? ' (software, as asked)' : ''}` };
      }
      case 'wasm': {
        const mod = await backendModule('wasm', o.backends);
        if (o.wasmPaths !== undefined) {
          if (typeof mod.setWasmPaths !== 'function') throw new PeftError('INVALID_ARGUMENT', 'initBackend: wasmPaths given but the wasm module has no setWasmPaths');
          // tfjs throws once the backend has started; the paths were then fixed by the first start
          if (!tf.findBackend('wasm')) mod.setWasmPaths(o.wasmPaths);
        }
        ensureWasmKernels();
        if (!(await tf.setBackend('wasm'))) return { ok: false, reason: 'the wasm backend failed to initialise' };
        if (!isNode) return { ok: true, reason: 'WebAssembly (SIMD) CPU backend' };
        const native = await tryNative(nativeWanted);
        // core's wasm fast paths only lay matmul operands out for XNNPACK's plain kernel; the native matmul
        // takes transposed operands at full speed, so the plain tfjs compositions are faster there
        setBackendFastPaths('wasm', !native.installed, MATMUL_LAYOUT);
        return {
          ok: true,
          reason: native.installed ? `WebAssembly (SIMD) + native matmul (${native.isa}, ${native.threads} threads)` : `WebAssembly (SIMD) CPU backend (native matmul off: ${native.reason})`,
          native,
        };
      }
      case 'cpu': {
        if (!(await tf.setBackend('cpu'))) return { ok: false, reason: 'the cpu backend failed to initialise' };
        return { ok: true, reason: 'plain JavaScript CPU backend (slowest)' };
      }
    }
  } catch (e) {
    return { ok: false, reason: `${name}: ${(e as Error).message}` };
  }
}

/** Optional device features our WGSL kernels use when the adapter has them (tfjs asks only for timestamps). */
const WANTED_GPU_FEATURES = ['timestamp-query', 'subgroups', 'bgra8unorm-storage'];

/**
 * Registers tfjs's webgpu backend on a device we request ourselves, so that our kernels get what the
 * adapter offers beyond tfjs's own request: the `subgroups` feature and the adapter's limits on storage
 * buffers per shader stage (multi-output kernels bind up to 10) and workgroup storage. Done once per
 * adapter; an already-initialised webgpu backend is kept.
 */
let registeredFor: unknown;
function registerWebgpuBackend(mod: any, adapter: any): void {
  if (registeredFor === adapter || !mod?.WebGPUBackend) return;
  if (tf.engine().registry['webgpu'] && registeredFor !== undefined) return;
  registeredFor = adapter;
  tf.removeBackend('webgpu');
  tf.registerBackend(
    'webgpu',
    async () => {
      const requiredFeatures = WANTED_GPU_FEATURES.filter((f) => adapter.features.has(f));
      const l = adapter.limits;
      const requiredLimits: Record<string, number> = {};
      for (const k of [
        'maxComputeWorkgroupStorageSize',
        'maxComputeWorkgroupsPerDimension',
        'maxStorageBufferBindingSize',
        'maxBufferSize',
        'maxComputeWorkgroupSizeX',
        'maxComputeWorkgroupSizeY',
        'maxComputeInvocationsPerWorkgroup',
        'maxStorageBuffersPerShaderStage',
      ]) {
        if (typeof l[k] === 'number') requiredLimits[k] = l[k];
      }
      const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
      return new mod.WebGPUBackend(device, adapter.info);
    },
    3,
  );
}

let current: BackendReport | undefined;

/**
 * Picks the best tfjs backend available — in Node tensorflow (tfjs-node-gpu / tfjs-node), webgpu on a
 * hardware adapter, wasm, cpu; in a browser webgpu (hardware), webgl (hardware), wasm, cpu — unless told
 * otherwise by `prefer` or PEFTJS_BACKEND. Reports what it chose and why.
 */
export async function initBackend(opts: InitBackendOptions = {}): Promise<BackendReport> {
  const envPrefer = env('PEFTJS_BACKEND')?.split(',').map((s) => s.trim()).filter(Boolean) as BackendName[] | undefined;
  const explicit = opts.prefer ?? (envPrefer?.length ? envPrefer : undefined);
  const order = explicit ? (Array.isArray(explicit) ? explicit : [explicit]) : isNode ? BACKEND_ORDER : BROWSER_BACKEND_ORDER;
  for (const b of order) {
    if (!ALL_BACKENDS.includes(b)) throw new PeftError('BACKEND', `unknown backend "${b}"; choose from ${ALL_BACKENDS.join(', ')}`);
  }
  if (opts.wasmPaths !== undefined && typeof opts.wasmPaths !== 'string' && (typeof opts.wasmPaths !== 'object' || opts.wasmPaths === null || Object.values(opts.wasmPaths).some((v) => typeof v !== 'string'))) {
    throw new PeftError('INVALID_ARGUMENT', 'initBackend: wasmPaths must be a folder URL or a map from .wasm file name to URL');
  }
  // A software GPU is taken when asked for explicitly, or allowed.
  const allowSoftwareGpu = opts.allowSoftwareGpu ?? (env('PEFTJS_ALLOW_SOFTWARE_GPU') === '1' || (explicit !== undefined && (order[0] === 'webgpu' || order[0] === 'webgl')));
  const nativeWanted = opts.native ?? env('PEFTJS_NATIVE') !== '0';
  const attempts: BackendReport['attempts'] = [];
  for (const b of order) {
    const r = await tryBackend(b, { allowSoftwareGpu, nativeWanted, backends: opts.backends, wasmPaths: opts.wasmPaths });
    attempts.push({ backend: b, ok: r.ok, reason: r.reason });
    if (r.ok) {
      await tf.ready();
      current = { backend: b, reason: r.reason, adapter: r.adapter, attempts, ...(r.native ? { native: r.native } : {}) };
      return current;
    }
  }
  throw new PeftError('BACKEND', `no backend could be initialised: ${attempts.map((a) => `${a.backend}: ${a.reason}`).join('; ')}`);
}

/** The last report of initBackend, if it ran. */
export function backendReport(): BackendReport | undefined {
  return current;
}
