/**
 * `@peftjs/core/browser`: the tfjs backends imported statically, so a bundler (esbuild, vite, webpack)
 * sees them and puts them in the bundle; core's own initBackend imports them dynamically, which only Node
 * and unbundled pages resolve. Stateless (it only holds the modules): initBackend stays core's one copy.
 *
 *   import { initBackend } from '@peftjs/core';
 *   import { browserBackends } from '@peftjs/core/browser';
 *   await initBackend({ backends: browserBackends, wasmPaths: '/wasm/' });
 */
import * as wasm from '@tensorflow/tfjs-backend-wasm';
import * as webgpu from '@tensorflow/tfjs-backend-webgpu';
import type { BackendModules } from './backend';

export const browserBackends: Required<BackendModules> = { wasm, webgpu };
export type { BackendModules } from './backend';
