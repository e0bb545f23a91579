"""Official-release import (renamed keys, EMA preference, strict shapes), hub path, native format."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from eqsolve.models import EqR, EqRConfig
from eqsolve.models.checkpoint import config_from_arch, normalize_official_keys, save_checkpoint
from eqsolve.models.loading import load_checkpoint, load_hub, load_official

ARCH = {  # the release's arch block (config/arch/eqr.yaml + Sudoku override), shrunk in width
    "name": "eqr@EqRModel", "loss": {"name": "losses@ACTLossHead"}, "halt_exploration_prob": 0.1,
    "halt_max_steps": 16, "H_cycles": 2, "L_cycles": 2, "H_layers": 0, "L_layers": 2,
    "hidden_size": 32, "num_heads": 4, "expansion": 4, "pos_encodings": "rope", "board_height": 9,
    "board_width": 9, "forward_dtype": "bfloat16", "mlp_t": True, "lambda_": 0.9,
    "noise_scale": 0.02, "H_init_std": 1.0, "L_init_std": 0.5,
}


def official_dict(model, ema_model=None, arch=ARCH):
    """A checkpoint laid out like the release's: compiled wrapper keys, loss-head prefix, EMA."""
    ckpt = {
        "step": 1000,
        "model": {f"_orig_mod.model.inner.{k}": v.clone() for k, v in model.state_dict().items()},
        "config": {"arch": dict(arch), "lr": 1e-4},
    }
    if ema_model is not None:
        ckpt["ema"] = {"mu": 0.999,
                       "shadow": {f"model.inner.{k}": v.clone() for k, v in ema_model.named_parameters()}}
    return ckpt


def logits(model, seed=0):
    tok = torch.randint(1, 11, (2, 81), generator=torch.Generator().manual_seed(seed))
    s = model.init_state(2, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.decode(model.map(s, model.embed(tok), noise=0.0))


def test_config_from_arch_maps_release_fields():
    cfg = config_from_arch(ARCH)
    assert (cfg.mixer, cfg.hidden_size, cfg.H_cycles, cfg.L_cycles, cfg.L_layers) == ("mlp_t", 32, 2, 2, 2)
    assert (cfg.lambda_, cfg.noise_scale, cfg.L_init_std, cfg.halt_max_steps) == (0.9, 0.02, 0.5, 16)
    assert config_from_arch({**ARCH, "mlp_t": False}).mixer == "attention"
    assert config_from_arch({**ARCH, "mlp_t": False, "pos_encodings": None}).pos_encodings == "none"
    with pytest.raises(ValueError, match="unknown official arch config key 'hiden_size' \\(did you mean 'hidden_size'\\?\\); valid: "):
        config_from_arch({**ARCH, "hiden_size": 8})
    with pytest.raises(ValueError, match="puzzle embeddings"):
        config_from_arch({**ARCH, "puzzle_emb_ndim": 32, "puzzle_emb_len": 16})


def test_normalize_keys_strips_wrappers():
    out = normalize_official_keys({"_orig_mod.model.inner.lm_head.weight": 1,
                                   "model._orig_mod.inner.q_head.bias": 2, "inner.x._orig_mod.y": 3})
    assert out == {"lm_head.weight": 1, "q_head.bias": 2, "x.y": 3}
    with pytest.raises(ValueError, match="collide"):
        normalize_official_keys({"model.inner.a": 1, "_orig_mod.inner.a": 2})


def test_official_round_trip_prefers_ema(tmp_path):
    cfg = config_from_arch(ARCH)
    torch.manual_seed(0)
    raw, ema = EqR(cfg), EqR(cfg)
    path = tmp_path / "eqr.pth"
    torch.save(official_dict(raw, ema), path)
    loaded = EqR.from_official(path)
    assert loaded.config == cfg and not loaded.training
    torch.testing.assert_close(logits(loaded), logits(ema), rtol=0, atol=0)
    assert not torch.allclose(logits(loaded), logits(raw))
    no_ema = EqR.from_official(str(path), prefer_ema=False)
    torch.testing.assert_close(logits(no_ema), logits(raw), rtol=0, atol=0)
    # the same through load_checkpoint (detects the official layout) and from a loaded dict
    torch.testing.assert_close(logits(EqR.from_checkpoint(path)), logits(ema), rtol=0, atol=0)
    # a bare state dict carries no config: the release's is assumed, and a small one is refused
    bare = {f"model.inner.{k}": v for k, v in raw.state_dict().items()}
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official(bare)


def test_release_sized_state_dict_loads(tmp_path):
    """The key names and shapes listed for sudoku-extreme/eqr.pth load into the default config."""
    g = torch.Generator().manual_seed(0)
    shapes = {"inner.embed_tokens.embedding_weight": (11, 512), "inner.lm_head.weight": (11, 512),
              "inner.q_head.weight": (2, 512), "inner.q_head.bias": (2,)}
    for i in range(2):
        p = f"inner.L_level.layers.{i}."
        shapes |= {p + "mlp_t.gate_up_proj.weight": (512, 81), p + "mlp_t.down_proj.weight": (81, 256),
                   p + "mlp.gate_up_proj.weight": (3072, 512), p + "mlp.down_proj.weight": (512, 1536)}
    state = {f"_orig_mod.model.{k}": torch.randn(v, generator=g) * 0.02 for k, v in shapes.items()}
    arch = {"hidden_size": 512, "H_cycles": 3, "L_cycles": 6, "L_layers": 2, "expansion": 4,
            "num_heads": 8, "mlp_t": True, "lambda_": 0.95, "noise_scale": 0.01}
    model = load_official({"model": state, "config": {"arch": arch}})
    assert model.config == EqRConfig()
    assert torch.equal(model.lm_head.weight, state["_orig_mod.model.inner.lm_head.weight"])


def test_puzzle_embedding_positions_are_a_clear_error():
    cfg = config_from_arch(ARCH)
    ckpt = official_dict(EqR(cfg))
    for i in range(2):  # a model trained on 81 + 16 positions
        key = f"_orig_mod.model.inner.L_level.layers.{i}.mlp_t.gate_up_proj.weight"
        ckpt["model"][key] = torch.zeros(512, 97)
    with pytest.raises(ValueError, match=r"(?s)shape mismatches.*\(512, 97\).*puzzle-embedding"):
        load_official(ckpt)


def test_missing_or_unexpected_keys_are_errors_not_partial_loads():
    cfg = config_from_arch(ARCH)
    ckpt = official_dict(EqR(cfg))
    del ckpt["model"]["_orig_mod.model.inner.lm_head.weight"]
    with pytest.raises(ValueError, match=r"missing: \['lm_head.weight'\]"):
        load_official(ckpt)
    ckpt = official_dict(EqR(cfg))
    ckpt["model"]["_orig_mod.model.inner.puzzle_emb.weights"] = torch.zeros(1, 32)
    with pytest.raises(ValueError, match=r"unexpected: \['puzzle_emb.weights'\]"):
        load_official(ckpt)
    ckpt = official_dict(EqR(cfg), arch={**ARCH, "hidden_size": 64})
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official(ckpt)
    with pytest.raises(FileNotFoundError):
        load_official("/nonexistent/eqr.pth")


def test_load_hub_uses_huggingface_hub_download(tmp_path, monkeypatch):
    cfg = config_from_arch(ARCH)
    model = EqR(cfg)
    path = tmp_path / "eqr.pth"
    torch.save(official_dict(model), path)
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None):
        calls.append((repo_id, filename, revision))
        return str(path)

    monkeypatch.setitem(sys.modules, "huggingface_hub",
                        types.SimpleNamespace(hf_hub_download=fake_download))
    loaded = EqR.load_hub(revision="abc")
    assert calls == [("locuslab/EqR-model", "sudoku-extreme/eqr.pth", "abc")]
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(ImportError, match=r"eqsolve\[hub\]"):
        load_hub()


def test_native_checkpoint_round_trip_is_atomic(tmp_path):
    cfg = EqRConfig(hidden_size=32, num_heads=4, H_cycles=1, L_cycles=2, mixer="sudoku_attention")
    model, ema = EqR(cfg), EqR(cfg)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(model, path, ema=ema.state_dict(), extra={"step": 3})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    loaded = load_checkpoint(path)
    assert loaded.config == cfg
    torch.testing.assert_close(logits(loaded), logits(ema), rtol=0, atol=0)
    torch.testing.assert_close(logits(load_checkpoint(path, prefer_ema=False)), logits(model), rtol=0, atol=0)
    # H5's layout: config = asdict(EqRConfig), no format key
    from dataclasses import asdict

    h5 = {"model": model.state_dict(), "config": asdict(cfg), "optimizer": {}, "step": 7}
    torch.testing.assert_close(logits(EqR.from_checkpoint(h5)), logits(model), rtol=0, atol=0)
    with pytest.raises(ValueError, match="format"):
        load_checkpoint({"format": "other/2", "model": {}})


def test_attention_variant_imports_with_its_arch():
    arch = {**ARCH, "mlp_t": False, "pos_encodings": "rope2d", "rms_norm_eps": 1e-6}
    cfg = config_from_arch(arch)
    assert (cfg.mixer, cfg.pos_encodings, cfg.rms_eps, cfg.board()) == ("attention", "rope2d", 1e-6, (9, 9))
    model = EqR(cfg)
    loaded = load_official(official_dict(model, arch=arch))
    assert "L_level.layers.0.self_attn.qkv_proj.weight" in loaded.state_dict()
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
    with pytest.raises(ValueError, match="shape mismatches|missing"):
        load_official(official_dict(model, arch=ARCH))  # attention weights into an mlp_t model
