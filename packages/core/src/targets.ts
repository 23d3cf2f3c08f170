import { PeftError } from './errors';

/** What decides which modules an injection method wraps (HF's target_modules and friends). */
export interface TargetSpec {
  targetModules: string | string[] | null;
  excludeModules?: string | string[] | null;
  layersToTransform?: number | number[] | null;
  layersPattern?: string | string[] | null;
}

const regexCache = new Map<string, RegExp>();
/** Python's re.fullmatch. */
export function fullMatch(pattern: string, key: string): boolean {
  let re = regexCache.get(pattern);
  if (!re) {
    try {
      re = new RegExp(`^(?:${pattern})$`, 'u');
    } catch (e) {
      throw new PeftError('INVALID_CONFIG', `target pattern "${pattern}" is not a valid regular expression: ${(e as Error).message}`);
    }
    regexCache.set(pattern, re);
  }
  return re.test(key);
}

/** A list entry matches a module name exactly or as a `.name` suffix; a string is a full regex match. */
export function matchesModuleList(spec: string | string[], key: string): boolean {
  if (typeof spec === 'string') return fullMatch(spec, key);
  return spec.includes(key) || spec.some((t) => key.endsWith(`.${t}`));
}

function layerIndexOf(key: string, layersPattern: string | string[] | null | undefined): number | null {
  const patterns = layersPattern == null || layersPattern.length === 0 ? null : typeof layersPattern === 'string' ? [layersPattern] : layersPattern;
  if (!patterns) {
    const m = /^.*\.[^.]*\.(\d+)\./.exec(key);
    return m ? Number(m[1]) : null;
  }
  for (const p of patterns) {
    const m = new RegExp(`^.*\\.${p}\\.(\\d+)\\.`).exec(key);
    if (m) return Number(m[1]);
  }
  return null;
}

/** HF PEFT's check_target_module_exists (layers_to_transform applies to list targets only, as in HF). */
export function isTargetModule(spec: TargetSpec, key: string): boolean {
  const t = spec.targetModules;
  if (t == null) return false;
  if (typeof t === 'string') return fullMatch(t, key);
  if (t.includes(key)) return true;
  let found = t.some((name) => key.endsWith(`.${name}`));
  const layers = spec.layersToTransform;
  const usingLayers = layers != null && (Array.isArray(layers) ? layers.length > 0 : true);
  if (found && usingLayers) {
    const idx = layerIndexOf(key, spec.layersPattern);
    if (idx === null) found = false;
    else found = Array.isArray(layers) ? layers.includes(idx) : idx === layers;
  }
  return found;
}

export function isExcludedModule(spec: TargetSpec, key: string): boolean {
  const e = spec.excludeModules;
  if (e == null || (Array.isArray(e) && e.length === 0)) return false;
  return matchesModuleList(e, key);
}

/** HF's rank_pattern / alpha_pattern key lookup: the first key matching the module name as a dotted suffix. */
export function findPatternKey(patterns: Record<string, unknown>, moduleName: string): string | undefined {
  for (const key of Object.keys(patterns)) {
    if (new RegExp(`^(.*\\.)?(${key})$`).test(moduleName)) return key;
  }
  return undefined;
}
