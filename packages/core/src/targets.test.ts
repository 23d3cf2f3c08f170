import { describe, expect, it } from 'vitest';
import { findPatternKey, fullMatch, isExcludedModule, isTargetModule } from './targets';
import { PeftError } from './errors';
import { peftError } from '../../../tools/testing/errors';

describe('target module matching (HF semantics)', () => {
  const q0 = 'model.layers.0.self_attn.q_proj';
  const q1 = 'model.layers.1.self_attn.q_proj';
  it('a list matches a name exactly or as a .name suffix', () => {
    expect(isTargetModule({ targetModules: ['q_proj'] }, q0)).toBe(true);
    expect(isTargetModule({ targetModules: ['proj'] }, q0)).toBe(false);
    expect(isTargetModule({ targetModules: ['self_attn.q_proj'] }, q0)).toBe(true);
    expect(isTargetModule({ targetModules: [q0] }, q0)).toBe(true);
    expect(isTargetModule({ targetModules: ['q_proj'] }, 'model.layers.0.self_attn.xq_proj')).toBe(false);
  });
  it('a string is a full regex match', () => {
    expect(isTargetModule({ targetModules: '.*q_proj' }, q0)).toBe(true);
    expect(isTargetModule({ targetModules: 'q_proj' }, q0)).toBe(false);
    expect(isTargetModule({ targetModules: '.*\\.(q|v)_proj' }, 'model.layers.0.self_attn.v_proj')).toBe(true);
    expect(isTargetModule({ targetModules: '.*layers\\.1.*q_proj' }, q0)).toBe(false);
  });
  it('layersToTransform with and without layersPattern', () => {
    expect(isTargetModule({ targetModules: ['q_proj'], layersToTransform: [1] }, q0)).toBe(false);
    expect(isTargetModule({ targetModules: ['q_proj'], layersToTransform: [1] }, q1)).toBe(true);
    expect(isTargetModule({ targetModules: ['q_proj'], layersToTransform: 0 }, q0)).toBe(true);
    expect(isTargetModule({ targetModules: ['q_proj'], layersToTransform: [0], layersPattern: 'layers' }, q0)).toBe(true);
    expect(isTargetModule({ targetModules: ['q_proj'], layersToTransform: [0], layersPattern: 'h' }, q0)).toBe(false);
    expect(isTargetModule({ targetModules: ['c_attn'], layersToTransform: [1], layersPattern: ['h'] }, 'transformer.h.1.attn.c_attn')).toBe(true);
  });
  it('excludeModules', () => {
    expect(isExcludedModule({ targetModules: null, excludeModules: ['q_proj'] }, q0)).toBe(true);
    expect(isExcludedModule({ targetModules: null, excludeModules: '.*layers\\.0.*' }, q0)).toBe(true);
    expect(isExcludedModule({ targetModules: null, excludeModules: null }, q0)).toBe(false);
  });
  it('rank/alpha pattern keys match as a dotted suffix', () => {
    expect(findPatternKey({ 'layers.0.self_attn.q_proj': 2 }, q0)).toBe('layers.0.self_attn.q_proj');
    expect(findPatternKey({ q_proj: 2 }, q1)).toBe('q_proj');
    expect(findPatternKey({ 'layers.0.self_attn.q_proj': 2 }, q1)).toBeUndefined();
  });
});

describe('target patterns in a linear-time engine (issue 14)', () => {
  const name = 'base_model.model.model.layers.10.self_attn.q_proj.lora_A.default.weight-qq';
  it('a catastrophic-backtracking pattern returns at once', () => {
    const t0 = performance.now();
    for (const p of ['(.*)*x', '(a|a)*$b', '(.*a){12}z', '((.+)+)+y']) {
      expect(fullMatch(p, name)).toBe(false);
      expect(isTargetModule({ targetModules: p }, 'a'.repeat(40))).toBe(false);
    }
    expect(performance.now() - t0).toBeLessThan(1000);
  });
  it('invalid layers_pattern, rank_pattern keys and huge patterns are PeftErrors naming the field', () => {
    const err = peftError;
    expect(err(() => isTargetModule({ targetModules: ['q_proj'], layersToTransform: [0], layersPattern: '(' }, 'model.layers.0.q_proj')).message).toMatch(/layers_pattern/);
    expect(err(() => findPatternKey({ '[': 4 }, 'model.layers.0.q_proj')).message).toMatch(/rank_pattern/);
    expect(err(() => fullMatch('x'.repeat(100_000), 'x')).code).toBe('INVALID_CONFIG');
    expect(err(() => fullMatch('q_proj(?=x)', 'q_proj')).code).toBe('UNSUPPORTED');
    expect(err(() => fullMatch('(a)\\1', 'aa')).code).toBe('UNSUPPORTED');
    expect(err(() => fullMatch('a)|(b', 'b')).code).toBe('INVALID_CONFIG');
  });
  it('keeps HF semantics: full match, layer index, dotted-suffix pattern keys', () => {
    expect(fullMatch('.*\\.(q|v)_proj', 'model.layers.0.self_attn.q_proj')).toBe(true);
    expect(fullMatch('q_proj', 'model.q_proj')).toBe(false);
    expect(isTargetModule({ targetModules: ['q_proj'], layersToTransform: [3], layersPattern: 'layers' }, 'model.layers.3.self_attn.q_proj')).toBe(true);
    expect(isTargetModule({ targetModules: ['q_proj'], layersToTransform: [3], layersPattern: 'layers' }, 'model.layers.4.self_attn.q_proj')).toBe(false);
    expect(findPatternKey({ 'self_attn.q_proj': 4 }, 'model.layers.0.self_attn.q_proj')).toBe('self_attn.q_proj');
    expect(findPatternKey({ 'q_proj': 4 }, 'model.layers.0.self_attn.xq_proj')).toBe(undefined);
  });
});
