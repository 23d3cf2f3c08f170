import { registerPeftMethod } from '@peftjs/core';
import { bottleneckMethod } from './method';

export {
  AdapterConfig,
  SeqBnConfig,
  DoubleSeqBnConfig,
  ParBnConfig,
  ADAPTER_PRESETS,
  ADAPTER_ACTIVATIONS,
  PLACEMENTS,
  adapterConfigFromName,
  type AdapterConfigInput,
  type AdapterActivation,
} from './config';
export { BottleneckLayer, BottleneckAdapter, bottleneckOptions, type BottleneckOptions, type BottleneckComposer } from './layer';
export { bottleneckAdapterOp, adapterActivation, type BottleneckInputs } from './op';
export { bottleneckMethod } from './method';
export { ConfigUnion, MAMConfig, UniPELTConfig, type MAMConfigInput, type UniPELTConfigInput } from './union';

registerPeftMethod(bottleneckMethod);
