// Vitest setup: every test file starts on the backend PEFTJS_TEST_BACKEND names (default wasm, else cpu).
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { ensureWasmKernels } from '@peftjs/core';

const want = process.env.PEFTJS_TEST_BACKEND ?? 'wasm';
if (want === 'wasm') ensureWasmKernels();
if (!(await tf.setBackend(want))) await tf.setBackend('cpu');
await tf.ready();
