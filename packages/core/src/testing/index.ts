// @peftjs/core/testing: the shared method conformance suite, for built-in and third-party methods alike.
export {
  CONFORMANCE_CHECKS,
  DEFAULT_TOLERANCES,
  ConformanceError,
  methodConformanceChecks,
  runMethodConformance,
  registerMethodConformance,
  adam,
  type ConformanceCheck,
  type ConformanceCheckName,
  type ConformanceInputs,
  type ConformanceOptimizer,
  type ConformanceSpec,
  type ConformanceTolerances,
  type MethodPromises,
  type TestRegistrar,
} from './conformance';
