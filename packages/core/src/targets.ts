import { RE2JS } from 're2js';
import { PeftError } from './errors';

/** Patterns longer than this are refused (no real target pattern comes near). */
export const MAX_PATTERN_LENGTH = 4096;

type Compiled = InstanceType<typeof RE2JS>;
const compiledCache = new Map<string, Compiled>();

/**
 * Compiles a pattern from a config in RE2JS, a linear-time engine (matching time grows with the
 * input, never exponentially: `(.*)*x` cannot hang). Syntax RE2 cannot take (lookaround,
 * backreferences) is an UNSUPPORTED PeftError, any other invalid pattern INVALID_CONFIG; `field`
 * names the config field.
 */
export function compilePattern(source: string, field: string, pattern: unknown = source): Compiled {
  let re = compiledCache.get(source);
  if (re) return re;
  const shown = typeof pattern === 'string' ? JSON.stringify(pattern.length > 60 ? `${pattern.slice(0, 60)}…` : pattern) : typeof pattern;
  if (typeof pattern !== 'string') throw new PeftError('INVALID_CONFIG', `${field}: a pattern must be a string, got ${shown}`);
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw new PeftError('INVALID_CONFIG', `${field}: pattern ${shown} is ${pattern.length} characters, more than the ${MAX_PATTERN_LENGTH} allowed`);
  }
  try {
    re = RE2JS.compile(source);
  } catch (e) {
    let jsValid = false;
    try {
      new RegExp(pattern, 'u'); // compiling only (never matching) is safe
      jsValid = true;
    } catch {}
    const why = e instanceof Error ? e.message.replace(/^error parsing regexp: /, '').slice(0, 120) : 'invalid';
    if (jsValid) {
      throw new PeftError('UNSUPPORTED', `${field}: pattern ${shown} uses syntax the linear-time pattern engine does not support (${why}); lookaround and backreferences are not available`, { cause: e });
    }
    throw new PeftError('INVALID_CONFIG', `${field}: pattern ${shown} is not a valid regular expression (${why})`, { cause: e });
  }
  if (compiledCache.size >= 512) compiledCache.clear();
  compiledCache.set(source, re);
  return re;
}

/** What decides which modules an injection method wraps (HF's target_modules and friends). */
export interface TargetSpec {
  targetModules: string | string[] | null;
  excludeModules?: string | string[] | null;
  layersToTransform?: number | number[] | null;
  layersPattern?: string | string[] | null;
}

/** Python's re.fullmatch (in a linear-time engine). */
export function fullMatch(pattern: string, key: string, field = 'target_modules'): boolean {
  // checked alone first, so a pattern like "a)|(b" cannot escape its group
  compilePattern(pattern, field);
  return compilePattern(`(?:${pattern})`, field, pattern).matches(key);
}

/** A list entry matches a module name exactly or as a `.name` suffix; a string is a full regex match. */
export function matchesModuleList(spec: string | string[], key: string, field = 'target_modules'): boolean {
  if (typeof spec === 'string') return fullMatch(spec, key, field);
  return spec.includes(key) || spec.some((t) => key.endsWith(`.${t}`));
}

function layerIndexOf(key: string, layersPattern: string | string[] | null | undefined): number | null {
  const patterns = layersPattern == null || layersPattern.length === 0 ? null : typeof layersPattern === 'string' ? [layersPattern] : layersPattern;
  if (!patterns) {
    const m = /^.*\.[^.]*\.(\d+)\./.exec(key);
    return m ? Number(m[1]) : null;
  }
  for (const p of patterns) {
    // HF: re.match(rf".*\.{pattern}\.(\d+)\.", key).group(1)
    compilePattern(p, 'layers_pattern');
    const m = compilePattern(`^.*\\.${p}\\.(\\d+)\\.`, 'layers_pattern', p).matcher(key);
    if (m.find()) return Number(m.group(1));
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
  return matchesModuleList(e, key, 'exclude_modules');
}

/** HF's rank_pattern / alpha_pattern key lookup: the first key matching the module name as a dotted suffix. */
export function findPatternKey(patterns: Record<string, unknown>, moduleName: string): string | undefined {
  for (const key of Object.keys(patterns)) {
    compilePattern(key, 'rank_pattern/alpha_pattern key');
    if (compilePattern(`(.*\\.)?(${key})`, 'rank_pattern/alpha_pattern key', key).matches(moduleName)) return key;
  }
  return undefined;
}
