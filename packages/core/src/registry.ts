import type { PeftConfig } from './config';
import { PEFT_METHOD_SPEC_VERSION, type PeftMethod } from './contract';
import { PeftError } from './errors';

/** The method registry: peft_type → method. The contract itself is contract.ts. */
const byType = new Map<string, PeftMethod<any>>();

const REQUIRED = {
  injection: ['targetFields', 'canWrap', 'inject', 'parameterKey'],
  'prompt-learning': ['createEncoder', 'saveTensors', 'loadTensors', 'forward'],
} as const;

/** What a method object lacks of the v2 contract (a v1 plugin, or a plain JS object), for the error. */
function missingMembers(method: Record<string, unknown>): string[] {
  const kind = method.kind as keyof typeof REQUIRED;
  if (!(kind in REQUIRED)) return [`kind ('injection' or 'prompt-learning', got ${JSON.stringify(method.kind)})`];
  const out: string[] = REQUIRED[kind].filter((k) => method[k] == null);
  if (kind === 'injection' && method.targetFields != null && typeof (method.targetFields as { targetModules?: unknown }).targetModules !== 'string') {
    out.push('targetFields.targetModules (the name of the config field holding the targets)');
  }
  return out;
}

/**
 * Registers a method; refused: another specificationVersion (a v1 method is told what v2 needs), a member of
 * the contract missing, a config class whose peftType is not the method's, a duplicate peft_type or prefix.
 * Returns the method.
 */
export function registerPeftMethod<C extends PeftConfig>(method: PeftMethod<C>, opts: { override?: boolean } = {}): PeftMethod<C> {
  const m = method as unknown as Record<string, unknown>;
  const name = typeof method?.peftType === 'string' ? method.peftType : String(method?.peftType);
  if (method.specificationVersion !== PEFT_METHOD_SPEC_VERSION) {
    const missing = missingMembers(m);
    const v1 = (method.specificationVersion as string) === 'v1' ? (m.promptLearning ? ' (v1 kept prompt-learning hooks under "promptLearning"; v2 has them on the method)' : '') : '';
    throw new PeftError(
      'REGISTRY',
      `method ${name}: specificationVersion "${String(method.specificationVersion)}" is not supported (expected "${PEFT_METHOD_SPEC_VERSION}")${missing.length ? `; v2 also needs ${missing.join(', ')}` : ''}${v1}; see @peftjs/core contract.ts`,
    );
  }
  if (!/^[A-Z][A-Z0-9_]*$/.test(name)) {
    throw new PeftError('REGISTRY', `method peftType "${name}" must be upper-case letters, digits and _ (HF's peft_type)`);
  }
  if (!method.prefix || method.prefix.includes('.')) throw new PeftError('REGISTRY', `method ${name}: prefix "${method.prefix}" is invalid`);
  const missing = missingMembers(m);
  if (missing.length) throw new PeftError('REGISTRY', `${method.kind ?? ''} method ${name} is incomplete: it has no ${missing.join(', ')}`.trim());
  const cls = method.configClass;
  if (typeof cls !== 'function') throw new PeftError('REGISTRY', `method ${name}: configClass is not a class`);
  if (cls.peftType !== name) {
    throw new PeftError('REGISTRY', `method ${name}: its configClass ${cls.name} declares peftType "${String(cls.peftType)}"; the two must be the same`);
  }
  const existing = byType.get(name);
  if (existing === method) return method;
  if (existing && !opts.override) throw new PeftError('REGISTRY', `a PEFT method named "${name}" is already registered`);
  for (const other of byType.values()) {
    if (other.peftType !== name && other.prefix === method.prefix) {
      throw new PeftError('REGISTRY', `parameter prefix "${method.prefix}" of ${name} is already used by ${other.peftType}`);
    }
  }
  byType.set(name, method);
  return method;
}

/** Removes a method from the registry; models that already hold one of its adapters keep working. */
export function unregisterPeftMethod(peftType: string): void {
  byType.delete(peftType);
}

export function getPeftMethod(peftType: string): PeftMethod {
  const m = byType.get(peftType);
  if (!m) {
    throw new PeftError(
      'UNKNOWN_METHOD',
      `unknown peft_type "${peftType}"; registered: ${[...byType.keys()].join(', ') || 'none'} (import the method's package, or 'peftjs' for all)`,
    );
  }
  return m;
}

export function listPeftMethods(): PeftMethod[] {
  return [...byType.values()];
}
