import * as tf from '@tensorflow/tfjs';
import { PeftError } from '../errors';

/**
 * A small PyTorch-like module system. Parameters are tf.Variables registered under HF's names, so
 * `namedParameters()` yields exactly the keys of HF's state dict. Children are looked up by name at
 * call time, so replacing a child (as PEFT methods do) changes what the parent calls.
 */
export class Module {
  protected readonly _modules = new Map<string, Module>();
  protected readonly _params = new Map<string, tf.Variable>();
  /** Non-parameter tensors that are part of the state (none by default). */
  protected readonly _buffers = new Map<string, tf.Tensor>();
  training = false;

  registerModule<M extends Module>(name: string, module: M): M {
    if (name.includes('.')) throw new PeftError('INVALID_ARGUMENT', `module name "${name}" must not contain "."`);
    this._modules.set(name, module);
    return module;
  }

  /**
   * Registers `value` as a trainable (or frozen) parameter. With `own`, `value` is a fresh tensor made for
   * this parameter and is disposed once the variable holds it (a variable keeps its own reference).
   */
  registerParameter(name: string, value: tf.Tensor, trainable = true, own = false): tf.Variable {
    const old = this._params.get(name);
    if (old) old.dispose();
    const v = tf.variable(value, trainable);
    if (own) value.dispose();
    this._params.set(name, v);
    return v;
  }

  /** Removes and disposes a parameter (e.g. an adapter's). */
  deleteParameter(name: string): void {
    this._params.get(name)?.dispose();
    this._params.delete(name);
  }

  deleteModule(name: string): Module | undefined {
    const m = this._modules.get(name);
    this._modules.delete(name);
    return m;
  }

  param(name: string): tf.Variable {
    const p = this._params.get(name);
    if (!p) throw new PeftError('INVALID_ARGUMENT', `${this.constructor.name} has no parameter "${name}"`);
    return p;
  }

  maybeParam(name: string): tf.Variable | undefined {
    return this._params.get(name);
  }

  child<M extends Module = Module>(name: string): M {
    const m = this._modules.get(name);
    if (!m) throw new PeftError('INVALID_ARGUMENT', `${this.constructor.name} has no child module "${name}"`);
    return m as M;
  }

  maybeChild<M extends Module = Module>(name: string): M | undefined {
    return this._modules.get(name) as M | undefined;
  }

  children(): IterableIterator<[string, Module]> {
    return this._modules.entries();
  }

  ownParameters(): IterableIterator<[string, tf.Variable]> {
    return this._params.entries();
  }

  /** All modules below (and including) this one, with dotted paths; the root has path ''. */
  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, m] of this._modules) yield* m.namedModules(prefix ? `${prefix}.${name}` : name);
  }

  /** All parameters with dotted HF-style names. A parameter shared by two modules is listed once. */
  *namedParameters(prefix = '', seen = new Set<tf.Variable>()): Generator<[string, tf.Variable]> {
    for (const [name, p] of this._params) {
      if (seen.has(p)) continue;
      seen.add(p);
      yield [prefix ? `${prefix}.${name}` : name, p];
    }
    for (const [name, m] of this._modules) yield* m.namedParameters(prefix ? `${prefix}.${name}` : name, seen);
  }

  parameters(): tf.Variable[] {
    return [...this.namedParameters()].map(([, p]) => p);
  }

  trainableParameters(): tf.Variable[] {
    return this.parameters().filter((p) => p.trainable);
  }

  getSubmodule<M extends Module = Module>(path: string): M {
    if (path === '') return this as unknown as M;
    let cur: Module = this;
    for (const part of path.split('.')) {
      const next = cur._modules.get(part);
      if (!next) throw new PeftError('INVALID_ARGUMENT', `no module "${path}" (missing "${part}")`);
      cur = next;
    }
    return cur as M;
  }

  /** Replaces the child at a dotted path; returns the module that was there. */
  setSubmodule(path: string, module: Module): Module {
    const i = path.lastIndexOf('.');
    const parent = i < 0 ? this : this.getSubmodule(path.slice(0, i));
    const name = i < 0 ? path : path.slice(i + 1);
    const old = parent._modules.get(name);
    if (!old) throw new PeftError('INVALID_ARGUMENT', `no module "${path}" to replace`);
    parent._modules.set(name, module);
    return old;
  }

  getParameter(path: string): tf.Variable {
    const i = path.lastIndexOf('.');
    const owner = i < 0 ? this : this.getSubmodule(path.slice(0, i));
    return owner.param(i < 0 ? path : path.slice(i + 1));
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Sets `trainable` on every parameter below this module (PyTorch's requires_grad_). */
  requiresGrad(flag: boolean): this {
    for (const [, p] of this.namedParameters()) p.trainable = flag;
    return this;
  }

  /** The parameters as a name → tensor record (the variables themselves, not copies). */
  stateDict(): Record<string, tf.Variable> {
    return Object.fromEntries(this.namedParameters());
  }

  /**
   * Assigns tensors to parameters by name. Shapes must agree; dtypes are cast to the parameter's.
   * Returns the names that were not found (`unexpected`) and parameters without a value (`missing`).
   */
  loadStateDict(
    tensors: Record<string, tf.Tensor>,
    opts: { strict?: boolean; source?: string } = {},
  ): { missing: string[]; unexpected: string[] } {
    const own = this.stateDict();
    const unexpected: string[] = [];
    for (const [name, t] of Object.entries(tensors)) {
      const p = own[name];
      if (!p) {
        unexpected.push(name);
        continue;
      }
      if (!tf.util.arraysEqual(p.shape, t.shape)) {
        throw new PeftError(
          'SHAPE_MISMATCH',
          `${opts.source ? opts.source + ': ' : ''}tensor "${name}" has shape [${t.shape}] but the model expects [${p.shape}]`,
        );
      }
      p.assign(t.dtype === p.dtype ? t : tf.tidy(() => t.cast(p.dtype)));
    }
    const missing = Object.keys(own).filter((k) => !(k in tensors));
    if (opts.strict && (missing.length || unexpected.length)) {
      throw new PeftError(
        'INVALID_FILE',
        `${opts.source ?? 'state dict'}: ${missing.length ? `missing tensors ${missing.slice(0, 5).join(', ')}` : ''}${
          missing.length && unexpected.length ? '; ' : ''
        }${unexpected.length ? `unexpected tensors ${unexpected.slice(0, 5).join(', ')}` : ''}`,
      );
    }
    return { missing, unexpected };
  }

  /**
   * Disposes every parameter below this module, and the buffers of the modules below that hold some (a
   * `disposeBuffers()` method: RoPE tables, 4-bit codes): so a PeftModel's dispose frees its base model whole.
   */
  dispose(): void {
    for (const [, p] of this.namedParameters()) p.dispose();
    for (const [, m] of this.namedModules()) (m as { disposeBuffers?: () => void }).disposeBuffers?.();
  }
}

/** A module holding named children, like torch.nn.ModuleDict (HF PEFT keeps one adapter per key). */
export class ModuleDict<M extends Module = Module> extends Module {
  set(name: string, m: M): M {
    return this.registerModule(name, m);
  }
  get(name: string): M | undefined {
    return this.maybeChild<M>(name);
  }
  has(name: string): boolean {
    return this._modules.has(name);
  }
  delete(name: string): void {
    const m = this.deleteModule(name);
    m?.dispose();
  }
  keys(): string[] {
    return [...this._modules.keys()];
  }
}

/** Holds bare parameters by key, like torch.nn.ParameterDict. */
export class ParameterDict extends Module {
  set(name: string, value: tf.Tensor, trainable = true): tf.Variable {
    return this.registerParameter(name, value, trainable);
  }
  get(name: string): tf.Variable | undefined {
    return this.maybeParam(name);
  }
  has(name: string): boolean {
    return this._params.has(name);
  }
  delete(name: string): void {
    this.deleteParameter(name);
  }
  keys(): string[] {
    return [...this._params.keys()];
  }
}

/** Anything called with one activation tensor: Linear, Conv1D, norms and their PEFT wrappers. */
export interface Layer {
  forward(x: tf.Tensor): tf.Tensor;
}

export function isLayer(m: unknown): m is Module & Layer {
  return m instanceof Module && typeof (m as unknown as Layer).forward === 'function';
}
