"""Reference fixtures for bottleneck adapters, written from AdapterHub's definitions (adapter-hub/adapters 1.x:
src/adapters/methods/modeling.py `Adapter` / `ParallelAdapter`, methods/bottleneck.py `BottleneckLayer`,
configuration/adapter_config.py `BnConfig` and its presets). AdapterHub itself cannot be installed beside a recent
transformers (it pins transformers 4.x), so its math is re-stated here in plain PyTorch and attached to HF models by
hooks, where AdapterHub places it in a pre-norm decoder (LLaMA, GPT-2):

    residual = x;  h = self_attn(input_layernorm(x));  x = attention_adapters(h, residual)   # mh_adapter
    residual = x;  h = mlp(post_attention_layernorm(x)); x = output_adapters(h, residual)    # output_adapter

where `attention_adapters(h, residual)` is BottleneckLayer.bottleneck_layer_forward(h, residual, layer_norm=None):
pre_forward -> Adapter.forward -> post_forward of the one active adapter. The hooks capture `residual` (the norm's
input) and replace the sub-block's output by `layer_output - residual`, so the decoder's own `residual + h` yields
the adapter layer's output.

Usage: python3 adapterhub_ref.py OUTDIR SEED
Per case OUTDIR/<case>/: base/ (save_pretrained), adapter/ (adapter_config.json + adapter_model.safetensors in
peftjs's BOTTLENECK layout), tensors.safetensors (input_ids, attention_mask, labels, logits_base, logits_adapted,
loss, and `grad.<tensor name>` for every adapter tensor: the gradient of the causal LM loss on the ids)."""
import sys, os, json, math, torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, GPT2Config, GPT2LMHeadModel

out, seed = sys.argv[1], int(sys.argv[2])
V, D = 300, 32
meta = {'transformers': transformers.__version__, 'torch': torch.__version__, 'seed': seed, 'reference': 'AdapterHub bottleneck math re-stated (adapters 1.x definitions)', 'cases': {}}


def llama():
    cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=2*D+8, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
                      attention_bias=False, mlp_bias=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def gpt2():
    cfg = GPT2Config(vocab_size=V, n_embd=D, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    torch.manual_seed(seed + 1)
    return GPT2LMHeadModel(cfg).eval()


g = torch.Generator().manual_seed(seed + 7)
ids = torch.randint(0, V, (2, 9), generator=g)
mask = torch.ones_like(ids); mask[1, :2] = 0  # left padding on the second row
labels = ids.clone(); labels[mask == 0] = -100

# peftjs's AdapterConfig fields (snake_case) with the SeqBnConfig defaults; a case overrides some
DEFAULTS = dict(mh_adapter=False, output_adapter=True, adapter_size=None, reduction_factor=16, adapter_act='relu', adapter_dropout=0.0,
                parallel=False, original_ln_before=True, original_ln_after=True, residual_before_ln=True, adapter_residual_before_ln=False,
                ln_before=False, ln_after=False, scaling=1.0, use_gating=False, leave_out=[], init_weights='mam_adapter')


def act_fn(name):
    # AdapterHub's Activation_Function_Class: transformers' get_activation(name.lower())
    return {'relu': F.relu, 'tanh': torch.tanh, 'swish': F.silu, 'silu': F.silu, 'gelu': F.gelu}[name]


class Adapter(nn.Module):
    """AdapterHub's Adapter (serial) and ParallelAdapter (cfg['parallel']) with layer_norm=None (pre-norm decoder)."""

    def __init__(self, d, r, cfg):
        super().__init__()
        self.cfg = cfg
        if cfg['ln_before']:
            self.adapter_norm_before = nn.LayerNorm(d)
        self.adapter_down = nn.Linear(d, r)
        self.adapter_up = nn.Linear(r, d)
        s = cfg['scaling']
        if s == 'learned':
            self.scaling = nn.Parameter(torch.ones(1))
        elif s == 'channel':
            self.scaling = nn.Parameter(torch.ones(d))
        else:
            self.scaling = float(s)
        if cfg['ln_after']:
            self.adapter_norm_after = nn.LayerNorm(d)
        if cfg['use_gating']:
            self.gate = nn.Linear(d, 1)
        self.dropout = nn.Dropout(p=cfg['adapter_dropout'])

    def pre_forward(self, hidden_states, input_tensor):
        c = self.cfg
        if c['parallel']:
            return input_tensor, input_tensor
        residual = hidden_states if c['residual_before_ln'] is True else None
        if c['original_ln_before']:
            hidden_states = hidden_states + input_tensor
        if not c['residual_before_ln']:
            residual = hidden_states
        return hidden_states, residual

    def forward(self, x, residual_input):
        c = self.cfg
        down = x
        if c['ln_before']:
            down = self.adapter_norm_before(down)  # first module of AdapterHub's adapter_down Sequential
        down = act_fn(c['adapter_act'])(self.adapter_down(down))
        up = self.adapter_up(down)
        up = up * self.scaling
        output = self.dropout(up)
        if c['use_gating']:
            gate = torch.sigmoid(self.gate(x))
            gate = torch.mean(gate, dim=1).unsqueeze(-1)
            output = output * gate
        if c['parallel']:
            if c['ln_after']:
                output = self.adapter_norm_after(output)
            return output
        if c['adapter_residual_before_ln']:
            output = output + residual_input
        if c['ln_after']:
            output = self.adapter_norm_after(output)
        if not c['adapter_residual_before_ln']:
            output = output + residual_input
        return output

    def post_forward(self, hidden_states, input_hidden_states, input_tensor):
        if self.cfg['parallel']:
            hidden_states = hidden_states + input_hidden_states
        if self.cfg['original_ln_after']:
            hidden_states = hidden_states + input_tensor
        return hidden_states

    def layer_forward(self, h, residual):
        """BottleneckLayer.bottleneck_layer_forward(h, residual, None) with this adapter active."""
        x, res = self.pre_forward(h, residual)
        o = self.forward(x, res)
        return self.post_forward(o, h, residual)


def bottleneck(cfg, layer):
    if cfg['adapter_size'] is not None:
        return cfg['adapter_size']
    rf = cfg['reduction_factor']
    if isinstance(rf, dict):
        rf = rf.get(str(layer), rf.get('default'))
    return max(1, int(D // rf))


class Attached:
    """Adapters on a model's residual connections, by hooks. enabled=False leaves the model as it was."""

    def __init__(self, model, family, cfg):
        self.enabled = True
        self.adapters = {}  # file key -> Adapter
        if family == 'llama':
            layers, root = model.model.layers, 'base_model.model.model.layers'
            parts = lambda l: (l.input_layernorm, l.self_attn, l.post_attention_layernorm, l.mlp)
        else:
            layers, root = model.transformer.h, 'base_model.model.transformer.h'
            parts = lambda l: (l.ln_1, l.attn, l.ln_2, l.mlp)
        for i, layer in enumerate(layers):
            if i in cfg['leave_out']:
                continue
            norm1, attn, norm2, mlp = parts(layer)
            for placement, on, norm, block in (('attention_adapters', cfg['mh_adapter'], norm1, attn), ('output_adapters', cfg['output_adapter'], norm2, mlp)):
                if not on:
                    continue
                a = Adapter(D, bottleneck(cfg, i), cfg)
                self.adapters[f'{root}.{i}.{placement}'] = a
                self._hook(norm, block, a)

    def _hook(self, norm, block, adapter):
        seen = {}

        def capture(module, args):
            seen['residual'] = args[0]  # the norm's input is the sub-block's residual

        def replace(module, args, output):
            if not self.enabled:
                return output
            h = output[0] if isinstance(output, tuple) else output
            residual = seen['residual']
            new_h = adapter.layer_forward(h, residual) - residual  # the decoder adds residual back
            return (new_h,) + tuple(output[1:]) if isinstance(output, tuple) else new_h

        norm.register_forward_pre_hook(capture)
        block.register_forward_hook(replace)

    def named_tensors(self):
        outp = {}
        for key, a in self.adapters.items():
            for n, p in a.named_parameters():
                outp[f'{key}.{n}'] = p
        return outp

    def randomize(self):
        with torch.no_grad():
            for n, p in self.named_tensors().items():
                center = 1.0 if (n.endswith('.scaling') or ('adapter_norm' in n and n.endswith('.weight'))) else 0.0
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + center)


def logits(m):
    with torch.no_grad():
        return m(input_ids=ids, attention_mask=mask).logits.float().contiguous()


def case(name, family, **fields):
    cfg = dict(DEFAULTS, **fields)
    d = os.path.join(out, name); os.makedirs(d, exist_ok=True)
    model = (llama if family == 'llama' else gpt2)()
    model.save_pretrained(os.path.join(d, 'base'), safe_serialization=True)
    for p in model.parameters():
        p.requires_grad_(False)
    att = Attached(model, family, cfg)
    att.randomize()
    tensors = att.named_tensors()
    att.enabled = False
    t = {'input_ids': ids, 'attention_mask': mask, 'labels': labels, 'logits_base': logits(model)}
    att.enabled = True
    t['logits_adapted'] = logits(model)
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    t['loss'] = loss.detach().reshape(1).double()
    for k, p in tensors.items():
        t[f'grad.{k}'] = p.grad.detach().float().contiguous()
    save_file(t, os.path.join(d, 'tensors.safetensors'))
    ad = os.path.join(d, 'adapter'); os.makedirs(ad, exist_ok=True)
    save_file({k: p.detach().float().contiguous() for k, p in tensors.items()}, os.path.join(ad, 'adapter_model.safetensors'), metadata={'format': 'pt'})
    config = dict(cfg, peft_type='BOTTLENECK', task_type='CAUSAL_LM', inference_mode=True)
    with open(os.path.join(ad, 'adapter_config.json'), 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True)
    meta['cases'][name] = {'family': family, 'config': cfg, 'loss': loss.item(), 'tensors': {k: list(p.shape) for k, p in tensors.items()}}


for fam in ('llama', 'gpt2'):
    # SeqBnConfig ('pfeiffer'): one serial adapter after the MLP, adapter input = mlp output + residual
    case(f'{fam}_seq_bn', fam, reduction_factor=4)
    # DoubleSeqBnConfig ('houlsby'): serial adapters after attention and after the MLP, on the sub-block output alone, swish
    case(f'{fam}_double_seq_bn', fam, mh_adapter=True, adapter_act='swish', original_ln_before=False, reduction_factor=4)
    # ParBnConfig ('parallel'): reads the sub-block's input, scaled by 4, added to the sub-block's output
    case(f'{fam}_par_bn', fam, parallel=True, original_ln_before=False, reduction_factor=2, scaling=4.0)
    # learned scaling + gating (UniPELT's gated adapter), both placements, gelu
    case(f'{fam}_gated_learned', fam, mh_adapter=True, use_gating=True, scaling='learned', adapter_act='gelu', reduction_factor=4)
    # the norm options: ln_before, ln_after, adapter_residual_before_ln, residual_before_ln=False, channel scaling, tanh; layer 0 left out
    case(f'{fam}_seq_bn_norms', fam, ln_before=True, ln_after=True, adapter_residual_before_ln=True, residual_before_ln=False,
         scaling='channel', adapter_act='tanh', adapter_size=5, leave_out=[0])
    # a gated parallel adapter at both placements with channel scaling and ln_before (not ln_after: a norm after the
    # gate would cancel it, leaving the gate's gradient only rounding)
    case(f'{fam}_par_bn_gated', fam, parallel=True, original_ln_before=False, mh_adapter=True, use_gating=True, scaling='channel', ln_before=True, reduction_factor=2)

meta['note'] = ('logits_* for input_ids/attention_mask (row 1 left-padded); loss = causal LM loss with labels = ids, -100 where the mask is 0; '
                'grad.<key> = d loss / d adapter tensor; the gate averages over every position, padded ones included, as AdapterHub does')
json.dump(meta, open(os.path.join(out, 'meta.json'), 'w'), indent=1, default=str)
print('done', list(meta['cases']))
