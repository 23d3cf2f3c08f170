import { registerPeftMethod } from '@peftjs/core';
import { diffPruningMethod } from './method';

export { DiffPruningConfig, type DiffPruningConfigInput } from './config';
export {
  DiffPruningLayer,
  DEFAULT_GATE,
  sampleGate,
  deterministicGate,
  gateOpenProbability,
  expectedL0,
  structuredExpectedL0,
  keptCount,
  projectDiff,
  scatterDiff,
  type GateParams,
  type DiffAdapterOptions,
} from './layer';
export { diffPruningMethod, projectDiffPruning, diffPruningLayers } from './method';

registerPeftMethod(diffPruningMethod);
