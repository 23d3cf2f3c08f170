// Type tests of the method contract (checked by `tsc -p tsconfig.json`): a method compiles only when it is
// complete, `canWrap` must be a type guard whose type reaches `inject`, target fields must be the config's own
// fields of the right type, and a prompt-learning method's hooks get its encoder type. Each @ts-expect-error
// fails the typecheck if the line it guards ever compiles.
import { z } from 'zod';
import { Linear } from './nn/layers';
import { Module } from './nn/module';
import { PeftConfig, basePeftConfigShape, targetModulesSchema } from './config';
import { PEFT_METHOD_SPEC_VERSION, prefixedParameterKey, type InjectionMethod, type PeftMethod, type PromptLearningMethod } from './contract';
import { registerPeftMethod } from './registry';

class ToyConfig extends PeftConfig {
  static readonly peftType = 'TOY';
  static readonly shape = { ...basePeftConfigShape, targetModules: targetModulesSchema.default(null), depth: z.number().default(1) };
  static readonly hfOnlyDefaults = {};
  declare targetModules: string | string[] | null;
  declare depth: number;
}

class ToyEncoder extends Module {
  table(): number {
    return 1;
  }
}

const base = { specificationVersion: PEFT_METHOD_SPEC_VERSION, peftType: 'TOY', prefix: 'toy_', configClass: ToyConfig } as const;

// complete: compiles, and `inject` gets the narrowed module without a cast
export const toy: InjectionMethod<ToyConfig, Linear> = {
  ...base,
  kind: 'injection',
  targetFields: { targetModules: 'targetModules' },
  canWrap: (m): m is Linear => m instanceof Linear,
  inject: ({ target }) => {
    const inFeatures: number = target.inFeatures; // a Linear's member: the guard's type arrived
    void inFeatures;
    return target;
  },
  parameterKey: (path, adapterName) => prefixedParameterKey(path, adapterName, 'toy_'),
};
export const registerToy = () => registerPeftMethod(toy); // a complete method is what registration takes

// @ts-expect-error parameterKey is missing: the adapter's tensors would not be declared
export const noParameterKey: InjectionMethod<ToyConfig, Linear> = { ...base, kind: 'injection', targetFields: { targetModules: 'targetModules' }, canWrap: (m): m is Linear => m instanceof Linear, inject: ({ target }) => target };

export const boolGuard: InjectionMethod<ToyConfig, Linear> = {
  ...base,
  kind: 'injection',
  targetFields: { targetModules: 'targetModules' },
  // @ts-expect-error canWrap must be a type guard, not a boolean
  canWrap: (m: Module) => m.constructor.name === 'Linear',
  inject: ({ target }) => target,
  parameterKey: () => undefined,
};

export const badField: InjectionMethod<ToyConfig, Linear> = {
  ...base,
  kind: 'injection',
  // @ts-expect-error a target field must be a config field holding module names ('depth' is a number)
  targetFields: { targetModules: 'depth' },
  canWrap: (m): m is Linear => m instanceof Linear,
  inject: ({ target }) => target,
  parameterKey: () => undefined,
};

export const wrongTarget: InjectionMethod<ToyConfig, Linear> = {
  ...base,
  kind: 'injection',
  targetFields: { targetModules: 'targetModules' },
  canWrap: (m): m is Linear => m instanceof Linear,
  // @ts-expect-error the narrowed target is a Linear, not an Embedding
  inject: ({ target }) => target.numEmbeddings,
  parameterKey: () => undefined,
};

// prompt learning: the encoder's own type in every hook
export const prompt: PromptLearningMethod<ToyConfig, ToyEncoder> = {
  ...base,
  kind: 'prompt-learning',
  createEncoder: () => new ToyEncoder(),
  saveTensors: (encoder) => (encoder.table(), {}),
  loadTensors: (encoder) => void encoder.table(),
  forward: ({ encoder }) => {
    encoder.table();
    throw new Error('types only');
  },
};

// @ts-expect-error a prompt-learning method without its forward is incomplete
export const noForward: PromptLearningMethod<ToyConfig, ToyEncoder> = { ...base, kind: 'prompt-learning', createEncoder: () => new ToyEncoder(), saveTensors: () => ({}), loadTensors: () => undefined };

// the union is told apart by kind
export function describe(m: PeftMethod): string {
  return m.kind === 'injection' ? Object.keys(m.targetFields).join(',') : m.createEncoder.name;
}
