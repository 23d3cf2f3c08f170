/**
 * `peftjs/browser`: the tfjs backends imported statically, for a bundle (`@peftjs/core/browser`).
 *
 *   import { initBackend } from 'peftjs';
 *   import { browserBackends } from 'peftjs/browser';
 *   await initBackend({ backends: browserBackends, wasmPaths: '/wasm/' });
 */
export { browserBackends, type BackendModules } from '@peftjs/core/browser';
