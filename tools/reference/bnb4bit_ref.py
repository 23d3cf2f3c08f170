#!/usr/bin/env python3
"""Independent NumPy reference of bitsandbytes' 4-bit quantisation (NF4 / FP4, blockwise absmax,
double quantisation of the absmax values), written from bitsandbytes' source:

  csrc/kernels.cu        kQuantizeBlockwise / kQuantizeBlockwiseSmall (absmax, 1/absmax, the NF4 and
                         FP4 decision trees, two codes a byte, first element in the high nibble),
                         dQuantize (the 8-bit binary search with its midpoint rounding),
                         kDequantizeBlockwise (LUT[code] * absmax; code[q] * absmax for 8-bit)
  bitsandbytes/functional.py
                         quantize_4bit (compress_statistics: offset = absmax.mean(), then
                         quantize_blockwise(absmax - offset, blocksize=256)), dequantize_blockwise
                         (+ offset), create_dynamic_map, get_4bit_type (the saved quant_map)

Everything is float32 as in the CUDA kernels (IEEE rounding: the reciprocal 1/absmax is the correctly
rounded one; see docs/methods/qlora.md for where a CUDA build with --use_fast_math may differ).
Nothing here imports peftjs, and peftjs' TypeScript does not read this file: it is the second,
independent derivation that tests compare with.

  python3 tools/reference/bnb4bit_ref.py               # writes packages/quant/fixtures/bnb4bit_ref.json
  python3 tools/reference/bnb4bit_ref.py --checkpoint  # writes packages/quant/fixtures/bnb4bit_llama/
"""
import hashlib
import json
import os
import struct
import sys

import numpy as np

f32 = np.float32
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# --- code tables (kernels.cu: nf4_dequantization_lut, fp4_dequantization_lut) -----------------------
NF4_LUT = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=f32)
FP4_MAG = np.array([0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25], dtype=f32)
FP4_LUT = np.concatenate([FP4_MAG, -FP4_MAG]).astype(f32)  # sign bit 0b1000 (1 - 2*sign)


def nf4_code(x):
    """dQuantizeNF4: the decision tree, written as the tree (not as a threshold count)."""
    x = f32(x)
    if x > f32(0.03979014977812767):
        if x > f32(0.3893125355243683):
            if x > f32(0.6427869200706482):
                return 0b1111 if x > f32(0.8614784181118011) else 0b1110
            return 0b1101 if x > f32(0.5016634166240692) else 0b1100
        if x > f32(0.2035212516784668):
            return 0b1011 if x > f32(0.2920137718319893) else 0b1010
        return 0b1001 if x > f32(0.1202552504837513) else 0b1000
    if x > f32(-0.33967943489551544):
        if x > f32(-0.13791173323988914):
            return 0b0111 if x > f32(-0.045525018125772476) else 0b0110
        return 0b0101 if x > f32(-0.23460740596055984) else 0b0100
    if x > f32(-0.6106329262256622):
        return 0b0011 if x > f32(-0.4599952697753906) else 0b0010
    return 0b0001 if x > f32(-0.8480964004993439) else 0b0000


def fp4_code(x):
    """dQuantizeFP4: sign bit, then the tree on |x|."""
    x = f32(x)
    sign = 0b1000 if x < 0 else 0
    x = f32(abs(x))
    if x > f32(0.29166667):
        if x > f32(0.583333):
            return (0b0011 if x > f32(0.8333333) else 0b0010) + sign
        return (0b101 if x > f32(0.4166667) else 0b100) + sign
    if x > f32(0.0859375):
        return (0b0111 if x > f32(0.20833333) else 0b0110) + sign
    return (0b0001 if x > f32(0.00260417) else 0b0000) + sign


def torch_linspace_f32(start, end, steps):
    """torch.linspace(start, end, steps, dtype=float32) on the CPU (LinspaceKernel's scalar formula:
    start + step*i below the halfway index, end - step*(steps-1-i) from it; step in float32)."""
    start, end = f32(start), f32(end)
    step = f32(f32(end - start) / f32(steps - 1))
    halfway = steps // 2
    out = np.empty(steps, dtype=f32)
    for i in range(steps):
        out[i] = f32(start + f32(step * f32(i))) if i < halfway else f32(end - f32(step * f32(steps - i - 1)))
    return out


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """functional.create_dynamic_map: float32 boundaries, means, scaled by a Python float (cast to f32)."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        n = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        b = torch_linspace_f32(0.1, 1, n)
        means = ((b[:-1] + b[1:]) / f32(2.0)).astype(f32)
        scale = f32(10 ** (-(max_exponent_bits - 1) + i))
        data += [float(v) for v in (scale * means).astype(f32)]
        if signed:
            data += [float(v) for v in (f32(-scale) * means).astype(f32)]
    assert additional_items == 0
    data.append(0.0)
    data.append(1.0)
    data += [0.0] * (256 - len(data))
    data.sort()
    return np.array(data, dtype=f32)


def dquantize8(code, x):
    """dQuantize<0>: binary search over the sorted 256-entry code, then the nearer of the two
    neighbours by the float32 midpoint (x > midpoint goes up; x < midpoint goes down)."""
    x = f32(x)
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = f32(-1.0), f32(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        mid = f32(f32(upper + val) * f32(0.5))
        return upper_pivot if x > mid else pivot
    mid = f32(f32(lower + val) * f32(0.5))
    return lower_pivot if x < mid else pivot


def block_absmax(a, blocksize):
    n = a.size
    nb = -(-n // blocksize)
    pad = np.zeros(nb * blocksize, dtype=f32)
    pad[:n] = a
    # the padding is loaded as 0.0 and takes part in the reduction (it cannot raise |max|)
    return pad.reshape(nb, blocksize), np.abs(pad.reshape(nb, blocksize)).max(axis=1).astype(f32)


def quantize_4bit(a, quant_type='nf4', blocksize=64):
    a = np.asarray(a, dtype=f32).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError('non-finite input')
    blocks, absmax = block_absmax(a, blocksize)
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = (f32(1.0) / absmax).astype(f32)  # 1/0 = inf, then 0*inf = NaN: all tree tests false
        normed = (blocks * inv[:, None]).astype(f32).reshape(-1)
    fn = nf4_code if quant_type == 'nf4' else fp4_code
    n = a.size
    codes = np.array([fn(v) for v in normed[: n + (n & 1)]], dtype=np.uint8)
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)  # element 2i high nibble, 2i+1 low
    return packed, absmax


def dequantize_4bit(packed, absmax, n, quant_type='nf4', blocksize=64):
    lut = NF4_LUT if quant_type == 'nf4' else FP4_LUT
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 0x0F
    codes = codes[:n]
    scale = absmax[np.arange(n) // blocksize]
    return (lut[codes] * scale).astype(f32)


def quantize_blockwise8(a, code, blocksize=256):
    a = np.asarray(a, dtype=f32).reshape(-1)
    blocks, absmax = block_absmax(a, blocksize)
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = (f32(1.0) / absmax).astype(f32)
        normed = (blocks * inv[:, None]).astype(f32).reshape(-1)
    q = np.array([dquantize8(code, v) for v in normed[: a.size]], dtype=np.uint8)
    return q, absmax


def dequantize_blockwise8(q, absmax, code, blocksize=256):
    return (code[q] * absmax[np.arange(q.size) // blocksize]).astype(f32)


def mean_f32(a):
    """absmax.mean(): the float64 sum of the float32 values, divided, rounded once to float32 (torch's
    own reduction order may differ by an ulp; the offset is saved in the file, so loading is exact)."""
    return f32(np.sum(a.astype(np.float64)) / a.size)


def double_quant(absmax, code):
    offset = mean_f32(absmax)
    q, nested = quantize_blockwise8((absmax - offset).astype(f32), code, 256)
    return q, nested, offset


def dequant_absmax(q, nested, offset, code):
    return (dequantize_blockwise8(q, nested, code, 256) + f32(offset)).astype(f32)


# --- the bundled model's weights -------------------------------------------------------------------
def read_safetensors(path):
    with open(path, 'rb') as fh:
        n = struct.unpack('<Q', fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    out = {}
    for name, meta in header.items():
        if name == '__metadata__':
            continue
        s, e = meta['data_offsets']
        raw = data[s:e]
        if meta['dtype'] == 'BF16':
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif meta['dtype'] == 'F32':
            arr = np.frombuffer(raw, dtype=np.float32)
        else:
            continue
        out[name] = arr.reshape(meta['shape']).astype(f32)
    return out


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def case(name, a, quant_type, dq, code):
    a = np.asarray(a, dtype=f32).reshape(-1)
    packed, absmax = quantize_4bit(a, quant_type)
    rec = {'tensor': name, 'numel': int(a.size), 'quantType': quant_type, 'doubleQuant': dq,
           'packedSha256': sha(packed), 'packedHead': [int(v) for v in packed[:16]],
           'absmaxSha256': sha(absmax)}
    if dq:
        q, nested, offset = double_quant(absmax, code)
        am = dequant_absmax(q, nested, offset, code)
        rec.update({'absmaxCodesSha256': sha(q), 'absmaxCodesHead': [int(v) for v in q[:16]],
                    'nestedAbsmax': [float(v) for v in nested], 'offset': float(offset),
                    'absmaxDequantSha256': sha(am)})
    else:
        am = absmax
    w = dequantize_4bit(packed, am, a.size, quant_type)
    rec['dequantSha256'] = sha(w)
    rec['dequantHead'] = [float(v) for v in w[:8]]
    rec['maxAbsErr'] = float(np.max(np.abs(w - a)))
    return rec


def main():
    code = create_dynamic_map()
    # the dynamic map's own checks: 256 sorted entries in [-1, 1], with 0 and 1
    assert code.size == 256 and np.all(np.diff(code) >= 0) and code[-1] == 1.0 and 0.0 in code
    # the saved quant_map for fp4 (get_4bit_type: the table divided by its max, 12) equals the CUDA LUT
    fp4_saved = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=f32) / f32(12)).astype(f32)
    assert np.array_equal(fp4_saved, FP4_LUT), (fp4_saved, FP4_LUT)
    w = read_safetensors(os.path.join(ROOT, 'packages/tiny-llama/model/model.safetensors'))
    q = w['model.layers.0.self_attn.q_proj.weight']
    k = w['model.layers.1.self_attn.k_proj.weight']
    down = w['model.layers.3.mlp.down_proj.weight']
    gate = w['model.layers.2.mlp.gate_proj.weight']
    zeros_in = q.reshape(-1)[:300].copy()
    zeros_in[64:128] = 0  # an all-zero block (absmax 0: codes from NaN)
    cases = [
        case('model.layers.0.self_attn.q_proj.weight', q, 'nf4', True, code),
        case('model.layers.0.self_attn.q_proj.weight', q, 'fp4', False, code),
        case('model.layers.1.self_attn.k_proj.weight', k, 'nf4', False, code),
        case('model.layers.3.mlp.down_proj.weight', down, 'nf4', True, code),  # 688 columns
        case('model.layers.2.mlp.gate_proj.weight', gate, 'fp4', True, code),
        case('model.layers.3.mlp.down_proj.weight[:1001]', down.reshape(-1)[:1001], 'nf4', True, code),  # odd numel
        case('model.layers.2.mlp.gate_proj.weight[:16451]', gate.reshape(-1)[:16451], 'fp4', True, code),  # 258 blocks, odd
        case('model.layers.0.self_attn.q_proj.weight[:300] with a zero block', zeros_in, 'nf4', True, code),
        case('model.layers.0.self_attn.q_proj.weight[:300] with a zero block', zeros_in, 'fp4', False, code),
    ]
    # ties: every split point of the trees and every float32 midpoint of the dynamic map, and their float32
    # neighbours, with the codes the kernels' comparisons give them
    def around(v):
        v = f32(v)
        return [float(np.nextafter(v, f32(-np.inf))), float(v), float(np.nextafter(v, f32(np.inf)))]
    nf4_splits = [0.03979014977812767, 0.3893125355243683, 0.6427869200706482, 0.8614784181118011, 0.5016634166240692,
                  0.2035212516784668, 0.2920137718319893, 0.1202552504837513, -0.33967943489551544, -0.13791173323988914,
                  -0.045525018125772476, -0.23460740596055984, -0.6106329262256622, -0.4599952697753906, -0.8480964004993439]
    fp4_splits = [0.29166667, 0.583333, 0.8333333, 0.4166667, 0.0859375, 0.20833333, 0.00260417]
    xs4 = sorted({x for v in nf4_splits for x in around(v)})
    xf4 = sorted({x for v in fp4_splits for s in (1, -1) for x in around(s * v)})
    mids = sorted({float(f32(f32(code[i] + code[i + 1]) * f32(0.5))) for i in range(255)})
    x8 = sorted({x for m in mids for x in around(m)})
    ties = {'nf4': {'x': xs4, 'code': [nf4_code(v) for v in xs4]},
            'fp4': {'x': xf4, 'code': [fp4_code(v) for v in xf4]},
            'dynamic': {'x': x8, 'code': [dquantize8(code, f32(v)) for v in x8]}}
    out = {
        'about': 'tools/reference/bnb4bit_ref.py (NumPy, from bitsandbytes csrc/kernels.cu and functional.py); sha256 of little-endian bytes',
        'ties': ties,
        'dynamicMap': [float(v) for v in code],
        'dynamicMapSha256': sha(code),
        'cases': cases,
    }
    path = os.path.join(ROOT, 'packages/quant/fixtures/bnb4bit_ref.json')
    with open(path, 'w') as fh:
        json.dump(out, fh, indent=1)
    for c in cases:
        print(c['tensor'], c['quantType'], 'dq' if c['doubleQuant'] else '', c['numel'], 'max|err|', c['maxAbsErr'])
    print('wrote', path)


if __name__ == '__main__' and '--checkpoint' not in sys.argv:
    main()


# --- a checkpoint as transformers saves a bitsandbytes 4-bit model (save_pretrained) ---------------
def write_safetensors(path, tensors):
    """safetensors' layout: u64 header size, JSON header (dtype, shape, data_offsets; __metadata__),
    then the data; tensors ordered by name."""
    header, chunks, off = {'__metadata__': {'format': 'pt'}}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dt = {np.dtype(np.float32): 'F32', np.dtype(np.uint8): 'U8'}[a.dtype]
        b = a.tobytes()
        header[name] = {'dtype': dt, 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as fh:
        fh.write(struct.pack('<Q', len(h)) + h + b''.join(chunks))


def bnb_layer(prefix, w, code, quant_type='nf4'):
    """Linear4bit._save_to_state_dict: weight (uint8 [n/2, 1]) and QuantState.as_dict(packed=True)."""
    out_f, in_f = w.shape
    packed, absmax = quantize_4bit(w, quant_type)
    q, nested, offset = double_quant(absmax, code)
    lut = NF4_LUT if quant_type == 'nf4' else FP4_LUT
    qs = {'quant_type': quant_type, 'blocksize': 64, 'dtype': 'float32', 'shape': [out_f, in_f],
          'nested_blocksize': 256, 'nested_dtype': 'float32', 'nested_offset': float(offset)}
    js = np.frombuffer(json.dumps(qs).encode('utf-8'), dtype=np.uint8)  # pack_dict_to_tensor
    t = {f'{prefix}.weight': packed.reshape(-1, 1), f'{prefix}.weight.absmax': q,
         f'{prefix}.weight.quant_map': lut.copy(), f'{prefix}.weight.nested_absmax': nested,
         f'{prefix}.weight.nested_quant_map': code.copy(), f'{prefix}.weight.quant_state.bitsandbytes__{quant_type}': js}
    deq = dequantize_4bit(packed, dequant_absmax(q, nested, offset, code), w.size, quant_type)
    return t, sha(deq)


def make_checkpoint():
    code = create_dynamic_map()
    src = read_safetensors(os.path.join(ROOT, 'packages/tiny-llama/model/model.safetensors'))
    d, inter, vocab, hd = 64, 96, 256, 32
    cfg = {'architectures': ['LlamaForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0, 'bos_token_id': 0,
           'eos_token_id': 0, 'head_dim': hd, 'hidden_act': 'silu', 'hidden_size': d, 'initializer_range': 0.02,
           'intermediate_size': inter, 'max_position_embeddings': 128, 'mlp_bias': False, 'model_type': 'llama',
           'num_attention_heads': 2, 'num_hidden_layers': 1, 'num_key_value_heads': 1, 'pad_token_id': 1,
           'pretraining_tp': 1, 'rms_norm_eps': 1e-05, 'rope_theta': 10000.0, 'tie_word_embeddings': True,
           'torch_dtype': 'float32', 'use_cache': True, 'vocab_size': vocab,
           # BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True).to_dict()
           'quantization_config': {'_load_in_4bit': True, '_load_in_8bit': False, 'bnb_4bit_compute_dtype': 'float32',
                                   'bnb_4bit_quant_storage': 'uint8', 'bnb_4bit_quant_type': 'nf4',
                                   'bnb_4bit_use_double_quant': True, 'llm_int8_enable_fp32_cpu_offload': False,
                                   'llm_int8_has_fp16_weight': False, 'llm_int8_skip_modules': None,
                                   'llm_int8_threshold': 6.0, 'load_in_4bit': True, 'load_in_8bit': False,
                                   'quant_method': 'bitsandbytes'}}
    L = 'model.layers.0.'
    shapes = {'self_attn.q_proj': (2 * hd, d), 'self_attn.k_proj': (hd, d), 'self_attn.v_proj': (hd, d),
              'self_attn.o_proj': (d, 2 * hd), 'mlp.gate_proj': (inter, d), 'mlp.up_proj': (inter, d), 'mlp.down_proj': (d, inter)}
    tensors, expect = {}, {}
    for m, (o, i) in shapes.items():
        w = src[L + m + '.weight'][:o, :i].copy()
        t, h = bnb_layer(L + m, w, code)
        tensors.update(t)
        expect[L + m] = h
    tensors['model.embed_tokens.weight'] = src['model.embed_tokens.weight'][:vocab, :d].copy()
    for n in ['model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight', 'model.norm.weight']:
        tensors[n] = src[n][:d].copy()
    out = os.path.join(ROOT, 'packages/quant/fixtures/bnb4bit_llama')
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, 'model.safetensors'), tensors)
    with open(os.path.join(out, 'config.json'), 'w') as fh:
        fh.write(json.dumps(cfg, indent=2, sort_keys=True) + '\n')  # PretrainedConfig.to_json_string
    with open(os.path.join(out, 'expected.json'), 'w') as fh:
        json.dump({'about': 'sha256 of each layer\'s dequantised float32 weight (tools/reference/bnb4bit_ref.py --checkpoint)', 'dequantSha256': expect}, fh, indent=1)
    print('wrote', out)


if __name__ == '__main__' and '--checkpoint' in sys.argv:
    make_checkpoint()
