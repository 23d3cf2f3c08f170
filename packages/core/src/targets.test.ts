import { describe, expect, it } from 'vitest';
import { findPatternKey, isExcludedModule, isTargetModule } from './targets';

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
