import { registerCompositionPart, registerPeftMethod } from '@peftjs/core';
import { bottleneckMethod } from './method';
import './webgpu'; // registers peftjs.BottleneckAdapter's webgpu fast path
import { fusionCompositionPart } from './fusion';

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
export { BottleneckLayer, BottleneckAdapter, bottleneckOptions, type BottleneckOptions } from './layer';
export { bottleneckAdapterOp, adapterActivation, type BottleneckInputs } from './op';
export { bottleneckMethod } from './method';
export { ConfigUnion, MAMConfig, UniPELTConfig, type MAMConfigInput, type UniPELTConfigInput } from './union';

export {
  AdapterFusion,
  AdapterFusionConfig,
  FUSION_PRESETS,
  FUSION_CONFIG_NAME,
  FUSION_WEIGHTS_NAME,
  FUSION_DIR,
  addAdapterFusion,
  deleteAdapterFusion,
  listAdapterFusions,
  saveAdapterFusion,
  loadAdapterFusion,
  fusionOf,
  fusionAttentions,
  type AdapterFusionConfigFields,
} from './fusion';
export { BOTTLENECK_COMPOSITIONS, bottleneckComposedForward } from './composition';

registerPeftMethod(bottleneckMethod);
registerCompositionPart(fusionCompositionPart);
