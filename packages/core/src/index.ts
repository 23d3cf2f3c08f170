export { PeftError, type PeftErrorCode } from './errors';
export { installFrugalGradients, setFrugalGradients } from './grad';
export { Module, ModuleDict, ParameterDict, isLayer, type Layer } from './nn/module';
export { Linear, Conv1D, Embedding, RMSNorm, LayerNorm, Dropout, Identity, ResidualAdd, type ResidualHook, kaimingUniform, checkAllocation, MAX_TENSOR_ELEMENTS, type LinearOptions } from './nn/layers';
export { manualSeed, nextSeed, nextRandom, getRngState, setRngState, mulberry32 } from './nn/random';
export {
  PreTrainedModel,
  KVCache,
  type KVSlab,
  isPreTrainedModel,
  toIdsTensor,
  type IdsLike,
  type ForwardInputs,
  type ForwardOutput,
  type ModelConfig,
  type GenerateOptions,
  type ForwardFn,
  isCheckpointable,
  type CheckpointableModule,
} from './model';
export { checkpoint, isRecordingGradients } from './checkpoint';
export {
  type FileSystem,
  nodeFileSystem,
  fetchFileSystem,
  getFileSystem,
  setFileSystem,
  joinPath,
  dirname,
  readJson,
  stableJson,
  insidePath,
  readFileChecked,
  parseJsonObject,
  checkJsonDepth,
  ioError,
  DEFAULT_MAX_LOAD_BYTES,
  MAX_JSON_BYTES,
  MAX_JSON_DEPTH,
} from './io/fs';
export {
  parseSafetensors,
  serializeSafetensors,
  tensorsToSafetensors,
  rawToTensor,
  rawToArray,
  loadSafetensors,
  saveSafetensors,
  loadModelWeights,
  modelWeightFiles,
  describeValue,
  clipName,
  MAX_HEADER_BYTES,
  MAX_TENSORS,
  type SafetensorsDtype,
  type RawTensor,
  type SafetensorsFile,
  type TensorToWrite,
} from './io/safetensors';
export { commitFiles, committedView, recoverFolder, COMMIT_JOURNAL, STAGING_PREFIX, type CommittedView } from './io/commit';
export { resolvePretrained, hubCacheDir, repoFolderName, isRepoId, type HubOptions, type HubClient, type PretrainedKind, type ResolvedPretrained } from './io/hub';
export { memoryFileSystem, indexedDbFileSystem, kvFileSystem, type MemoryFileSystem, type KvStore, type KvEntry } from './io/kv_fs';
export { opfsFileSystem } from './io/opfs';
export { zipFiles, unzipFiles, crc32 } from './io/zip';
export { adapterFiles, adapterZip, adapterBlob } from './io/adapter_archive';
export { MATMUL_LAYOUT } from './kernels/cpu';
export {
  defineOp,
  registerFastPath,
  setFastPathsEnabled,
  setBackendFastPaths,
  checkConformance,
  listOps,
  type Op,
  type OpDefinition,
  type FastPath,
  type ConformanceReport,
  type TensorInputs,
  type OpAttrs,
} from './kernels/registry';
export { linearOp, batchMatMulOp, linear2d, stopGradient } from './kernels/ops';
export {
  hostBackend,
  wasmHeapBackend,
  runBackendKernel,
  disposeInfos,
  view2d,
  writeScalar,
  type HostBackend,
  type WasmHeapBackend,
  type HostValues,
} from './kernels/host';
export { rmsNormOp } from './kernels/webgpu/norm';
export * as z from './schema';
// the schema types at the top level too: a package's emitted .d.ts names them (`z.…` alone cannot be named there)
export type { Chain as SchemaChain, ObjectChain as SchemaObjectChain, Schema } from './schema';
export {
  TaskType,
  PeftConfig,
  basePeftConfigShape,
  targetModulesSchema,
  configFromHfJson,
  parseFields,
  camelToSnake,
  snakeToCamel,
  type PeftConfigClass,
  type ConfigShape,
} from './config';
export {
  PEFT_METHOD_SPEC_VERSION,
  prefixedParameterKey,
  type PeftMethod,
  type InjectionMethod,
  type PromptLearningMethod,
  type InjectArgs,
  type TargetFields,
  type FieldOf,
  type WeightedAdapterOptions,
} from './contract';
export { registerPeftMethod, unregisterPeftMethod, getPeftMethod, listPeftMethods } from './registry';
export { isTargetModule, isExcludedModule, matchesModuleList, fullMatch, findPatternKey, type TargetSpec } from './targets';
export { SEQ_CLS_HEADS, outputHeads, isOutputHead, allLinearTargets } from './heads';
export {
  Stack,
  Parallel,
  Average,
  BatchSplit,
  Split,
  Fuse,
  ALLOWED_NESTINGS,
  COMPOSITION_TYPES,
  isCompositionBlock,
  parseComposition,
  validateComposition,
  flattenComposition,
  blocksOf,
  parallelChannels,
  isSingleAdapter,
  compositionToString,
  compositionToJson,
  compositionFromJson,
  composeLayer,
  touchesLayer,
  type CompositionType,
  type CompositionBlock,
  type AdapterSetup,
  type StackBlock,
  type ParallelBlock,
  type AverageBlock,
  type BatchSplitBlock,
  type SplitBlock,
  type FuseBlock,
  type AverageOptions,
  type BatchSplitOptions,
  type SplitOptions,
  type ComposeOps,
  type CompositionJson,
} from './composition';
export { FUSION_MODULE, COMPOSITION_NAME, registerCompositionPart, type LossTermModule, type CompositionFile, type CompositionPart } from './peft_composition';
export { BaseTunerLayer, ModulesToSaveWrapper, TunerModel, isTunerLayer, targetableModules, assertFiniteMerge } from './tuner';
export { PeftModel, getPeftModel, readAdapterConfig, CONFIG_NAME, WEIGHTS_NAME, PROMPT_ENCODER_NAME, type TunerLayerStatus, type TunerModelStatus } from './peft_model';
export {
  promptLearningConfigShape,
  preparePromptLearningConfig,
  forwardWithVirtualTokens,
  forwardWithPrefix,
  splitPrefix,
  prefixMaskWithOnes,
  assertEncoderReproduces,
  loadPromptEmbeddings,
  encoderState,
  type ReparameterizedPromptEncoder,
  type PromptLearningFields,
  type PrefixLayer,
} from './prompt_learning';
export { initBackend, backendReport, summarizeAdapter, BACKEND_ORDER, BROWSER_BACKEND_ORDER, type BackendModules, type BackendName, type BackendReport, type GpuAdapterSummary, type InitBackendOptions } from './backend';
export { ensureWasmKernels } from './kernels/wasm';
export { gpuMemory, createPeakMemoryTracker, trackPeakMemory, type GpuMemory, type PeakMemoryTracker } from './memory';
export { createProgressBar, formatDuration, type ProgressBar, type ProgressStream } from './progress';
export { runWgsl, dispatch1d, webgpuBackend, deviceFeatures, toTensor, type WgslKernel, type DispatchArgs, type Uniform } from './kernels/webgpu/runner';
export { GpuProfiler, profileGpu, formatGpuProfile, type GpuProfile, type KernelTime } from './kernels/webgpu/profile';
export {
  runMatmul as wgslMatmul,
  matmulKernel as wgslMatmulKernel,
  matmulUniforms as wgslMatmulUniforms,
  planMatmul,
  matmulSupports,
  matmulTuning,
  MATMUL_TILES,
  type MatmulArgs,
  type MatmulTile,
  type MatmulTileName,
  type MatmulVariant,
  type MatmulPlan,
} from './kernels/webgpu/matmul';
export { matmulOp, fusedMatMul, matmulGradients, type FusedMatMulOptions } from './kernels/webgpu/matmul_op';
export { WGSL_MATMUL } from './kernels/webgpu/linear';
export { useWgslForTfjsMatMul, wgslForTfjsMatMul } from './kernels/webgpu/tfjs_matmul';
export { installWebgpuElementwise, uninstallWebgpuElementwise } from './kernels/webgpu/elementwise';
