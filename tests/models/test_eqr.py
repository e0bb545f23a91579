"""EqR against an independent reference written from the official release's architecture (the
formulas of the TRM backbone: latent (z_H, z_L), weight-tied blocks, H/L cycles), not from
eqsolve's code, so that a shared mistake cannot make both agree."""

from __future__ import annotations

import math

import pytest
import torch

from eqsolve.models import EqR, EqRConfig
from eqsolve.models.layers import RotaryEmbedding, swiglu_hidden_size

# ------------------------------------------------------------------ reference implementation


def ref_rms(h, eps=1e-5):
    h = h.double()
    return h / torch.sqrt((h * h).mean(-1, keepdim=True) + eps)


def ref_swiglu(h, w_gate_up, w_down):
    hidden = w_down.shape[1]
    a = h @ w_gate_up.double().T
    gate, up = a[..., :hidden], a[..., hidden:]
    return (gate * torch.sigmoid(gate) * up) @ w_down.double().T


def ref_rope(t, theta=10000.0, positions=None):
    """Rotate-half RoPE on (B, L, H, hd): pair (i, i + hd/2) rotated by p · theta^(-2i/hd)."""
    _, n, _, hd = t.shape
    pos = torch.arange(n, dtype=torch.float64) if positions is None else positions.double()
    i = torch.arange(hd // 2, dtype=torch.float64)
    ang = pos[:, None] * theta ** (-2 * i / hd)  # (L, hd/2)
    c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    a, b = t[..., : hd // 2], t[..., hd // 2 :]
    return torch.cat((a * c - b * s, b * c + a * s), -1)


def ref_peers(side=9):
    box = int(math.sqrt(side))
    m = torch.zeros(side * side, side * side, dtype=torch.bool)
    for i in range(side * side):
        for j in range(side * side):
            ri, ci, rj, cj = i // side, i % side, j // side, j % side
            same_box = (ri // box, ci // box) == (rj // box, cj // box)
            m[i, j] = ri == rj or ci == cj or same_box
    return m


def ref_attention(h, w_qkv, w_o, heads, rope, mask):
    b, n, d = h.shape
    hd = d // heads
    qkv = (h @ w_qkv.double().T).view(b, n, 3, heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if rope:
        q, k = ref_rope(q), ref_rope(k)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(hd)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)
    return out.reshape(b, n, d) @ w_o.double().T


def ref_pool(h, w):
    b, n, d = h.shape
    out = torch.zeros(b, n, 3 * d, dtype=torch.float64)
    for i in range(n):
        r, c = divmod(i, 9)
        rows = [r * 9 + k for k in range(9)]
        cols = [k * 9 + c for k in range(9)]
        boxes = [(r // 3 * 3 + a) * 9 + c // 3 * 3 + bb for a in range(3) for bb in range(3)]
        out[:, i] = torch.cat([h[:, rows].mean(1), h[:, cols].mean(1), h[:, boxes].mean(1)], -1)
    return out @ w.double().T


def ref_forward(sd, cfg, tokens, depth):
    """Zero initial state, noise off: logits after `depth` outer iterations (float64)."""
    d = cfg.hidden_size
    x = math.sqrt(d) * sd["embed_tokens.embedding_weight"].double()[tokens]
    mask = ref_peers() if cfg.mixer == "sudoku_attention" else None

    def block(i, h):
        p = f"L_level.layers.{i}."
        if cfg.mixer == "mlp_t":
            ht = h.transpose(1, 2)  # the token MLP and its norm act along the sequence
            ht = ref_rms(ht + ref_swiglu(ht, sd[p + "mlp_t.gate_up_proj.weight"], sd[p + "mlp_t.down_proj.weight"]))
            h = ht.transpose(1, 2)
        elif cfg.mixer == "sudoku_pool":
            h = ref_rms(h + ref_pool(h, sd[p + "pool.pool_proj.weight"]))
        else:
            att = ref_attention(h, sd[p + "self_attn.qkv_proj.weight"], sd[p + "self_attn.o_proj.weight"],
                                cfg.num_heads, cfg.pos_encodings == "rope", mask)
            h = ref_rms(h + att)
        return ref_rms(h + ref_swiglu(h, sd[p + "mlp.gate_up_proj.weight"], sd[p + "mlp.down_proj.weight"]))

    def U(z, inj):
        h = z + inj
        for i in range(cfg.L_layers):
            h = block(i, h)
        return (1 - cfg.lambda_) * z + cfg.lambda_ * h

    z_H = torch.zeros_like(x)
    z_L = torch.zeros_like(x)
    for _ in range(depth):
        for _ in range(cfg.H_cycles):
            for _ in range(cfg.L_cycles):
                z_L = U(z_L, z_H + x)
            z_H = U(z_H, z_L)
    return z_H @ sd["lm_head.weight"].double().T, z_H[:, 0] @ sd["q_head.weight"].double().T + sd["q_head.bias"].double()


def small(mixer="mlp_t", **kw):
    base = dict(hidden_size=32, num_heads=4, H_cycles=2, L_cycles=2, L_layers=2, mixer=mixer)
    base.update(kw)
    return EqRConfig(**base)


def tokens(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 11, (n, 81), generator=g)


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mixer", ["mlp_t", "attention", "sudoku_attention", "sudoku_pool"])
def test_logits_match_reference_formulas(mixer, dtype):
    torch.manual_seed(1)
    model = EqR(small(mixer)).to(dtype)
    with torch.no_grad():  # a non-trivial halting head, to check its readout too
        model.q_head.weight.normal_()
    tok = tokens()
    s = model.init_state(3, std=0.0)
    x = model.embed(tok)
    with torch.no_grad():
        for _ in range(2):
            s = model.map(s, x, noise=0.0)
        logits, halt = model.decode(s), model.halt_logit(s)
    ref_logits, ref_q = ref_forward(model.state_dict(), model.config, tok, depth=2)
    assert logits.dtype == dtype
    # float64: same formulas (RoPE tables and the q readout are float32); float32: round-off
    tol = 1e-6 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(logits.double(), ref_logits, rtol=tol, atol=tol)
    torch.testing.assert_close(halt.double(), ref_q[:, 0], rtol=tol, atol=tol)
    assert (logits.double() - ref_logits).abs().max() < 1e-3 * ref_logits.abs().max()


def test_release_shapes_and_swiglu_width():
    model = EqR(EqRConfig())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["embed_tokens.embedding_weight"] == (11, 512)
    assert shapes["lm_head.weight"] == (11, 512)
    assert shapes["q_head.weight"] == (2, 512) and shapes["q_head.bias"] == (2,)
    assert shapes["L_level.layers.1.mlp_t.gate_up_proj.weight"] == (512, 81)
    assert shapes["L_level.layers.1.mlp_t.down_proj.weight"] == (81, 256)
    assert shapes["L_level.layers.1.mlp.gate_up_proj.weight"] == (3072, 512)
    assert shapes["L_level.layers.1.mlp.down_proj.weight"] == (512, 1536)
    assert len(shapes) == 3 + 1 + 2 * 4  # no stray parameters or persistent buffers
    assert swiglu_hidden_size(81, 4) == 256 and swiglu_hidden_size(512, 4) == 1536
    assert swiglu_hidden_size(128, 4) == 512 and swiglu_hidden_size(120, 2) == 256


def test_linear_init_std_is_one_over_sqrt_fan_in():
    model = EqR(EqRConfig())
    w = model.L_level.layers[0].mlp.gate_up_proj.weight  # fan_in 512
    assert abs(w.std().item() * math.sqrt(512) - 1.0) < 0.01
    assert w.abs().max().item() <= 2.0 / 0.8796 / math.sqrt(512) + 1e-6


def test_halting_head_initialisation():
    model = EqR(small())
    assert torch.count_nonzero(model.q_head.weight) == 0
    assert torch.equal(model.q_head.bias, torch.tensor([-5.0, -5.0]))
    s = model.init_state(4)
    assert torch.equal(model.halt_logit(s), torch.full((4,), -5.0))
    assert model.q_logits(s).shape == (4, 2)


def test_random_initial_state_statistics_and_reproducibility():
    model = EqR(small(H_init_std=1.0, L_init_std=0.5))
    s = model.init_state(64, generator=torch.Generator().manual_seed(0))
    assert s.shape == (64, 2, 81, 32)
    z_h, z_l = s[:, 0], s[:, 1]
    assert abs(z_h.std().item() - 1.0) < 0.02 and abs(z_l.std().item() - 0.5) < 0.01
    assert abs(z_h.mean().item()) < 0.02
    # truncated at two underlying sigmas: 2 / 0.8796 times the target std
    assert z_h.abs().max().item() <= 2.274 and z_h.abs().max().item() > 2.2
    again = model.init_state(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)
    assert torch.count_nonzero(model.init_state(2, std=0.0)) == 0


def test_noise_is_a_runtime_option():
    model = EqR(small(noise_scale=0.01))
    x, s = model.embed(tokens(2)), model.init_state(2, std=0.0)
    with torch.no_grad():
        a, b = model.map(s, x, noise=0.0), model.map(s, x, noise=0.0)
        g = torch.Generator().manual_seed(3)
        c = model.map(s, x, generator=g)  # config default 0.01
        d = model.map(s, x, noise=0.01, generator=torch.Generator().manual_seed(3))
        e = model.map(s, x, noise=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(c, d)
    # the H-update is last: z_H differs from the noiseless one by about lambda-propagated noise
    gap_small, gap_large = (c - a).abs().mean().item(), (e - a).abs().mean().item()
    assert 1e-4 < gap_small < gap_large


def test_rope_scores_depend_only_on_relative_position():
    rot = RotaryEmbedding(head_dim=16, seq_len=20)
    g = torch.Generator().manual_seed(0)
    qv, kv = torch.randn(16, generator=g), torch.randn(16, generator=g)
    q = qv.expand(1, 20, 1, 16).contiguous()
    k = kv.expand(1, 20, 1, 16).contiguous()
    qr, kr = rot.apply(q, k)
    scores = (qr[0, :, 0] @ kr[0, :, 0].T)  # (20, 20)
    for offset in (-5, 0, 3, 11):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[0].expand_as(diag), atol=1e-4, rtol=1e-4)
    assert (torch.diagonal(scores, 3)[0] - torch.diagonal(scores, 4)[0]).abs() > 1e-3
    torch.testing.assert_close(qr[0, 0, 0], qv)  # position 0 is not rotated


def test_attention_without_positions_is_permutation_equivariant_and_rope_is_not():
    tok = tokens(2)
    perm = torch.randperm(81, generator=torch.Generator().manual_seed(5))
    for pos, equivariant in (("none", True), ("rope", False)):
        torch.manual_seed(0)
        model = EqR(small("attention", pos_encodings=pos, H_cycles=1, L_cycles=1))
        x = model.embed(tok)
        s = model.init_state(2, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            out = model.map(s, x, noise=0.0)
            out_p = model.map(s[:, :, perm], x[:, perm], noise=0.0)
        close = torch.allclose(out[:, :, perm], out_p, atol=1e-5)
        assert close == equivariant, pos


def test_sudoku_attention_only_sees_row_column_box_peers():
    model = EqR(small("sudoku_attention", H_cycles=1, L_cycles=1, L_layers=1))
    tok = tokens(1)
    cell, far, peer = 0, 4 * 9 + 4, 2 * 9 + 2  # (0,0); (4,4) shares nothing; (2,2) same box
    s = model.init_state(1, std=0.0)
    changed_far, changed_peer = tok.clone(), tok.clone()
    changed_far[0, far] = tok[0, far] % 10 + 1
    changed_peer[0, peer] = tok[0, peer] % 10 + 1
    with torch.no_grad():
        base = model.map(s, model.embed(tok), noise=0.0)[:, 1, cell]  # z_L after one L-update
        z_far = model.map(s, model.embed(changed_far), noise=0.0)[:, 1, cell]
        z_peer = model.map(s, model.embed(changed_peer), noise=0.0)[:, 1, cell]
    assert torch.equal(base, z_far)
    assert not torch.allclose(base, z_peer)


def test_grad_last_h_cycle_backpropagates_through_last_cycle_only():
    torch.manual_seed(0)
    cfg = small(H_cycles=3, L_cycles=1, L_layers=1)
    model = EqR(cfg)
    one = EqR(small(H_cycles=1, L_cycles=1, L_layers=1))
    one.load_state_dict(model.state_dict())
    tok = tokens(2)
    s0 = model.init_state(2, generator=torch.Generator().manual_seed(0))
    out = model.map(s0, model.embed(tok), noise=0.0, grad_last_h_cycle=True)
    out.square().sum().backward()
    with torch.no_grad():
        mid = one.map(one.map(s0, one.embed(tok), noise=0.0), one.embed(tok), noise=0.0)
    ref = one.map(mid, one.embed(tok), noise=0.0)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref)
    for (name, p), q in zip(model.named_parameters(), one.parameters()):
        if q.grad is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    # full backprop differs (it also goes through the first two cycles)
    model.zero_grad()
    model.map(s0, model.embed(tok), noise=0.0).square().sum().backward()
    g_full = model.L_level.layers[0].mlp.down_proj.weight.grad
    assert not torch.allclose(g_full, one.L_level.layers[0].mlp.down_proj.weight.grad, atol=1e-5)


def test_map_trains_every_parameter_it_uses():
    model = EqR(small("attention"))
    s = model.map(model.init_state(2), model.embed(tokens(2)))
    (model.decode(s).logsumexp(-1).sum() + model.halt_logit(s).sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.embed_tokens.embedding_weight.grad.abs().sum() > 0


def test_predict_digits_are_argmax_over_digit_tokens():
    model = EqR(small())
    s = model.init_state(2)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[0] = 100.0  # the pad token would win a plain argmax
        model.lm_head.weight[7] = 1.0
    z_h_sign = torch.sign(s[:, 0].sum(-1))  # logit of token 7 is sum(z_H) per cell
    digits = model.predict_digits(s)
    assert digits.min() >= 1 and digits.max() <= 9
    assert torch.equal(digits == 6, z_h_sign > 0)


def test_input_validation():
    model = EqR(small())
    with pytest.raises(ValueError, match="shape"):
        model.embed(torch.ones(2, 80, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        model.embed(torch.full((1, 81), 11))
    with pytest.raises(TypeError, match="integer"):
        model.embed(torch.ones(1, 81))
    with pytest.raises(ValueError, match="state"):
        model.map(torch.zeros(2, 81, 32), model.embed(tokens(2)))
    with pytest.raises(ValueError, match="mixer"):
        EqRConfig(mixer="transformer")
    with pytest.raises(ValueError, match="num_heads"):
        EqRConfig(mixer="attention", hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="H_cycles"):
        EqRConfig(H_cycles=0)
    with pytest.raises(ValueError, match="square"):
        EqRConfig(mixer="sudoku_attention", seq_len=80)
    with pytest.raises(ValueError, match="unknown EqRConfig key"):
        EqRConfig.from_dict({"hidden_size": 8, "hiden_size": 8})


def test_rope2d_rotates_rows_and_columns_separately():
    cfg = small("attention", pos_encodings="rope2d")
    model = EqR(cfg)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 81, 4, 8, generator=g)
    qr, _ = model.rotary.apply(q, q)
    rows = torch.arange(81) // 9
    cols = torch.arange(81) % 9
    expected = torch.cat((ref_rope(q[..., :4], positions=rows), ref_rope(q[..., 4:], positions=cols)), -1)
    torch.testing.assert_close(qr.double(), expected, atol=1e-5, rtol=1e-5)
    x, s = model.embed(tokens(1)), model.init_state(1)
    assert torch.isfinite(model.map(s, x)).all()
