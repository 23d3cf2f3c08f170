import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { Module } from './module';
import { Linear, Embedding } from './layers';
import { PeftError } from '../errors';

class Block extends Module {
  constructor() {
    super();
    this.registerModule('q_proj', new Linear(4, 4, { bias: false }));
    this.registerModule('emb', new Embedding(10, 4));
  }
}
class Net extends Module {
  constructor() {
    super();
    const layers = this.registerModule('layers', new Module());
    layers.registerModule('0', new Block());
    layers.registerModule('1', new Block());
  }
}

describe('nn.Module', () => {
  it('names parameters with dotted HF paths and replaces children by path', () => {
    const n = new Net();
    expect([...n.namedParameters()].map(([k]) => k)).toEqual([
      'layers.0.q_proj.weight',
      'layers.0.emb.weight',
      'layers.1.q_proj.weight',
      'layers.1.emb.weight',
    ]);
    const repl = new Linear(4, 4);
    const old = n.setSubmodule('layers.1.q_proj', repl);
    expect(n.getSubmodule('layers.1.q_proj')).toBe(repl);
    expect(old).toBeInstanceOf(Linear);
    expect(() => n.getSubmodule('layers.2.q_proj')).toThrow(/no module "layers.2.q_proj"/);
    expect(() => n.setSubmodule('layers.0.nope', repl)).toThrow(PeftError);
  });

  it('loadStateDict checks shapes and reports missing/unexpected', () => {
    const n = new Net();
    expect(() => n.loadStateDict({ 'layers.0.q_proj.weight': tf.zeros([4, 5]) })).toThrow(/"layers.0.q_proj.weight" has shape \[4,5\].*\[4,4\]/);
    const r = n.loadStateDict({ 'layers.0.q_proj.weight': tf.ones([4, 4]), extra: tf.zeros([1]) });
    expect(r.unexpected).toEqual(['extra']);
    expect(r.missing).toContain('layers.1.emb.weight');
    expect(n.getParameter('layers.0.q_proj.weight').dataSync()[0]).toBe(1);
    expect(() => n.loadStateDict({}, { strict: true, source: 'model.safetensors' })).toThrow(/model.safetensors: missing tensors/);
  });

  it('freezes, trains and evaluates the tree', () => {
    const n = new Net();
    n.requiresGrad(false);
    expect(n.trainableParameters().length).toBe(0);
    n.train();
    expect(n.getSubmodule('layers.0.q_proj').training).toBe(true);
    n.eval();
    expect(n.getSubmodule('layers.0').training).toBe(false);
  });
});
