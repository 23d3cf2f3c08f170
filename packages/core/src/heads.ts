import { TaskType } from './config';
import type { PreTrainedModel } from './model';
import { Conv1D, Linear } from './nn/layers';
import { BaseTunerLayer, targetableModules } from './tuner';

/**
 * HF's classifier heads of a sequence classifier (PeftModelForSequenceClassification's
 * `classifier_module_names`), in HF's order: saved whole with every SEQ_CLS adapter (`modules_to_save`),
 * and never a method's target.
 */
export const SEQ_CLS_HEADS: readonly string[] = ['classifier', 'score'];

/** The module names no method targets by default: the model's output heads, and for SEQ_CLS the classifier heads. */
export function outputHeads(model: PreTrainedModel, taskType: string | null): Set<string> {
  const heads = new Set(model.outputHeadNames);
  if (taskType === TaskType.SEQ_CLS) for (const h of SEQ_CLS_HEADS) heads.add(h);
  return heads;
}

/** Whether module `name` (a full path) is one of `heads`, by its full path or its last part. */
export function isOutputHead(name: string, heads: ReadonlySet<string>): boolean {
  return heads.has(name) || heads.has(name.slice(name.lastIndexOf('.') + 1));
}

/**
 * HF's `all-linear`: every Linear / Conv1D but the output heads, as full module names (what HF saves).
 * A layer an earlier adapter wrapped counts by the module it wraps (a second all-linear adapter, as in HF).
 */
export function allLinearTargets(model: PreTrainedModel, taskType: string | null): string[] {
  const heads = outputHeads(model, taskType);
  return targetableModules(model)
    .filter(([name, m]) => {
      const inner = m instanceof BaseTunerLayer ? m.getBaseLayer() : m;
      return (inner instanceof Linear || inner instanceof Conv1D) && !isOutputHead(name, heads);
    })
    .map(([name]) => name);
}
