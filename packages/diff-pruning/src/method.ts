import * as tf from '@tensorflow/tfjs';
import {
  PeftError,
  PeftModel,
  PEFT_METHOD_SPEC_VERSION,
  isLayer,
  prefixedParameterKey,
  allLinearTargets,
  rawToArray,
  type InjectionMethod,
  type Layer,
  type Module,
} from '@peftjs/core';
import { DiffPruningConfig } from './config';
import { DiffPruningLayer, deterministicGate, expectedL0, projectDiff, structuredExpectedL0, type GateParams } from './layer';

export function gateParams(config: DiffPruningConfig): GateParams {
  return { gamma: config.gateStretch[0], zeta: config.gateStretch[1], beta: config.gateTemperature };
}

/** The diff pruning layers of a PeftModel that hold adapter `name`. */
export function diffPruningLayers(peft: PeftModel, name: string): DiffPruningLayer[] {
  return [...peft.namedModules()].map(([, m]) => m).filter((m): m is DiffPruningLayer => m instanceof DiffPruningLayer && m.has(name));
}

const PREFIX = 'diff_pruning_';
const INDICES = /^(.*)\.diff_pruning_indices\.([^.]+)$/;
const GATED = /\.diff_pruning_(delta|log_alpha|group_log_alpha)\.([^.]+)$/;

export const diffPruningMethod: InjectionMethod<DiffPruningConfig, (Module & Layer) | DiffPruningLayer> = {
  specificationVersion: PEFT_METHOD_SPEC_VERSION,
  kind: 'injection',
  peftType: 'DIFF_PRUNING',
  prefix: PREFIX,
  configClass: DiffPruningConfig,
  targetFields: { targetModules: 'targetModules', excludeModules: 'excludeModules' },

  prepareConfig(config, model) {
    const t = config.targetModules;
    if (t == null || (typeof t === 'string' && t.toLowerCase() === 'all-linear')) {
      return config.with({ targetModules: allLinearTargets(model, config.taskType) });
    }
    return config;
  },

  // any module with a weight or a bias; inject checks the config's diffParameters against it
  canWrap(module): module is (Module & Layer) | DiffPruningLayer {
    return module instanceof DiffPruningLayer || (isLayer(module) && (module.maybeParam('weight') !== undefined || module.maybeParam('bias') !== undefined));
  },

  inject({ target, targetName, adapterName, config }) {
    const layer = target instanceof DiffPruningLayer ? target : new DiffPruningLayer(target);
    const base = layer.getBaseLayer();
    const parameters = config.diffParameters.filter((p) => base.maybeParam(p) !== undefined);
    if (!parameters.length) {
      throw new PeftError('INVALID_CONFIG', `DIFF_PRUNING: target module "${targetName}" (${base.constructor.name}) has none of diffParameters ${JSON.stringify(config.diffParameters)}`);
    }
    layer.updateLayer(adapterName, { gate: gateParams(config), parameters, initLogAlpha: config.initLogAlpha, density: config.density, structured: config.structured }, config.projected);
    return layer;
  },

  parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, PREFIX),

  /**
   * Saving a gated adapter writes its projection (what `projectDiffPruning` would make): per parameter the
   * round(density · numel) entries of largest |δ ⊙ ẑ| (⊙ ẑ_g when structured), as `….diff_pruning_indices.<param>` (int32) and
   * `….diff_pruning_values.<param>`.
   */
  toFileTensors(tensors, config) {
    const out: Record<string, tf.Tensor> = {};
    const gated = new Map<string, { delta?: tf.Tensor; logAlpha?: tf.Tensor; group?: tf.Tensor }>();
    for (const [key, t] of Object.entries(tensors)) {
      const m = GATED.exec(key);
      if (!m) {
        out[key] = t;
        continue;
      }
      const stem = `${key.slice(0, m.index)}|${m[2]}`;
      const entry = gated.get(stem) ?? {};
      if (m[1] === 'delta') entry.delta = t;
      else if (m[1] === 'log_alpha') entry.logAlpha = t;
      else entry.group = t;
      gated.set(stem, entry);
    }
    const g = gateParams(config);
    for (const [stem, { delta, logAlpha, group }] of gated) {
      const [module, param] = stem.split('|');
      if (!delta || !logAlpha) throw new PeftError('INVALID_ARGUMENT', `DIFF_PRUNING: ${module}.diff_pruning_${delta ? 'log_alpha' : 'delta'}.${param} is missing; cannot save the diff of ${module}.${param}`);
      if (config.structured && !group) throw new PeftError('INVALID_ARGUMENT', `DIFF_PRUNING: ${module}.diff_pruning_group_log_alpha.${param} is missing; cannot save the diff of ${module}.${param}`);
      const proj = tf.tidy(() => {
        const d = tf.mul(delta, deterministicGate(logAlpha, g));
        return projectDiff(group ? tf.mul(d, deterministicGate(group, g)) : d, config.density);
      });
      out[`${module}.diff_pruning_indices.${param}`] = proj.indices;
      out[`${module}.diff_pruning_values.${param}`] = proj.values;
      tf.dispose([delta, logAlpha, group ?? []]);
    }
    return out;
  },

  /**
   * A file's indices must address their tensor: integers in [0, numel), strictly ascending (a repeated index would
   * add its value twice). Read from the file's bytes on the host; the error names the file and the tensor.
   */
  checkFileTensors({ file, source, peft }) {
    for (const [key, raw] of Object.entries(file.tensors)) {
      const m = INDICES.exec(key);
      if (!m) continue;
      if (raw.dtype !== 'I32' && raw.dtype !== 'I64') throw new PeftError('INVALID_FILE', `${source}: tensor "${key}" is ${raw.dtype}; diff pruning's indices are I32 (or I64)`);
      let layer: Module | undefined;
      try {
        layer = peft.getSubmodule(m[1]);
      } catch {
        continue; // not this model's: the loader names the tensor as unexpected
      }
      const numel = layer instanceof DiffPruningLayer ? layer.getBaseLayer().maybeParam(m[2])?.size : undefined;
      if (numel === undefined) continue;
      const idx = rawToArray(raw);
      for (let i = 0; i < idx.length; i++) {
        const v = idx[i];
        if (!Number.isInteger(v) || v < 0 || v >= numel) {
          throw new PeftError('INVALID_FILE', `${source}: tensor "${key}": index ${v} at position ${i} is outside [0, ${numel}) of ${m[1].replace(/^base_model\.model\./, '')}.${m[2]}`);
        }
        if (i > 0 && v <= idx[i - 1]) {
          throw new PeftError('INVALID_FILE', `${source}: tensor "${key}": index ${v} at position ${i} follows ${idx[i - 1]}; the indices must ascend (a repeated index would add its value twice)`);
        }
      }
    }
  },

  /** λ · Σ E[L0] (structured: Σ P(z_g ≠ 0) · Σ P(z_i ≠ 0)) over the gated parameters of the adapter, while training (an eval loss is the task's alone). */
  lossTerm({ peft, adapterName, config }) {
    if (config.sparsityPenalty === 0) return null;
    const layers = diffPruningLayers(peft, adapterName).filter((l) => l.training && !l.isProjected(adapterName));
    if (!layers.length) return null;
    const g = gateParams(config);
    return tf.tidy(() => {
      const terms: tf.Scalar[] = [];
      for (const l of layers) {
        for (const p of l.adapterOptions(adapterName)!.parameters) {
          const group = l.groupLogAlpha(adapterName, p);
          terms.push(group ? structuredExpectedL0(l.logAlpha(adapterName, p)!, group, g) : expectedL0(l.logAlpha(adapterName, p)!, g));
        }
      }
      return tf.mul(tf.addN(terms), config.sparsityPenalty) as tf.Scalar;
    });
  },
};

/**
 * Guo et al.'s projection: turns gated adapter `adapterName` (default: the active one) into a fixed mask of
 * exactly round(density · numel) entries per diffed tensor (the largest |δ ⊙ ẑ|); the values stay trainable, so
 * training can go on with the mask fixed (a new optimizer: the variables are new). The config becomes
 * `projected: true`. Returns the number of entries kept.
 */
export function projectDiffPruning(peft: PeftModel, adapterName: string = peft.activeAdapter): number {
  const config = peft.peftConfig[adapterName];
  if (!(config instanceof DiffPruningConfig)) {
    throw new PeftError('INVALID_ARGUMENT', `projectDiffPruning: adapter "${adapterName}" is ${config ? `a ${config.peftType} adapter` : 'not in this model'}; adapters: ${Object.keys(peft.peftConfig).join(', ')}`);
  }
  let kept = 0;
  for (const l of diffPruningLayers(peft, adapterName)) {
    l.project(adapterName);
    for (const p of l.adapterOptions(adapterName)!.parameters) kept += l.child<Module>('diff_pruning_values').child(adapterName).param(p).size;
  }
  peft.peftConfig[adapterName] = config.with({ projected: true });
  peft.setAdapter(peft.activeAdapters);
  return kept;
}
