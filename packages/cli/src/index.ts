// @peftjs/cli: the `peft` command's library side. Every command is a function here too.
export { main, DEMO_CONFIG, type Io } from './cli';
export { recommendPeftMethod, recommendForModel, memoryEstimates, parseBytes, GUIDE_RECOMMENDATIONS, DEFAULT_RECOMMENDATION, type Recommendation, type ModelRecommendation, type ModelFacts, type Constraints, type TaskKind } from './recommend';
export { loadRunConfig, validateRunConfig, parseConfigText, applySets, fillTemplate, runConfigSchema, CliError, DATA_DIR, SPAM_ASSASSIN, type RunConfig, type TaskSpec, type LoadedConfig } from './config';
export { runTraining, scoreTasks, formatScores, buildPeftConfig, loadModel, readRecords, taskRecords, readRunRecord, RUN_RECORD, ADAPTER_SUBDIR, REPORT_FILE, type RunRecord, type TaskScore, type TrainResult, type TrainOptions } from './run';
export { methodsTable, measureMethods, formatMethodsTable, estimateTrainingBytes, GUIDE_TABLE, type MethodMeasure } from './methods';
export { inspectDir, formatInspect, readSafetensorsHeader, type InspectResult, type SafetensorsSummary } from './inspect';
export { mergeAdapter, writeModelFolder } from './merge';
export { writeReport, renderReport, renderSvg, reportCharts, type ReportCharts } from './report';
export { jinjaChatTemplate, readChatTemplate, type ChatTemplateFn } from './chat';
