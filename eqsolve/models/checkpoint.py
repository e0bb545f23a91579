"""Checkpoint files of :class:`~eqsolve.models.eqr.EqR`: official release and native format (plain
config + state dict; building the model is ``EqR.from_checkpoint``/``from_official``, or
:mod:`eqsolve.models.loading`).

Official release (``locuslab/EqR-model``, ``sudoku-extreme/eqr.pth``): a torch dict with
``model`` (state dict), optional ``ema`` (``{"mu", "shadow": {name: tensor}}`` or a flat
``{name: tensor}``; preferred when present) and ``config`` (whose ``arch`` holds hidden_size,
H_cycles, L_cycles, L_layers, expansion, num_heads, mlp_t, lambda_, noise_scale, ...). Keys may
carry ``_orig_mod.`` segments (torch.compile) and a leading ``model.`` (the loss-head wrapper);
after that they read ``inner.<name>`` where ``<name>`` is this package's parameter name.

Loading is strict: any missing, unexpected or wrongly shaped tensor is a ValueError that lists
them (e.g. a model trained with 16 puzzle-embedding positions), never a partial load.

Native format (``save_checkpoint`` / ``read_checkpoint``): ``{"format": "eqsolve.eqr/1",
"config": EqRConfig dict, "model": state dict, "ema": optional state dict, "extra": {...}}``.

Files are read with :func:`eqsolve._safe_load.safe_torch_load` (``weights_only=True``): loading a
checkpoint never runs code from it, and a file that is not a torch checkpoint is one
``ValueError`` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from eqsolve._errors import check_keys
from eqsolve._io import atomic_torch_save
from eqsolve._safe_load import safe_torch_load
from eqsolve.models.eqr_config import EqRConfig

__all__ = [
    "NATIVE_FORMAT",
    "config_from_arch",
    "download_official",
    "load_strict",
    "normalize_official_keys",
    "read_checkpoint",
    "read_official",
    "save_checkpoint",
]

NATIVE_FORMAT = "eqsolve.eqr/1"

# official `arch` keys that map 1:1 onto EqRConfig fields
_ARCH_FIELDS = (
    "hidden_size", "H_cycles", "L_cycles", "L_layers", "expansion", "num_heads", "lambda_",
    "noise_scale", "H_init_std", "L_init_std", "rope_theta", "board_height", "board_width",
    "halt_max_steps", "pos_encodings", "vocab_size", "seq_len",
)
# official `arch` keys that do not change the inference architecture
_ARCH_IGNORED = (
    "name", "short_name", "loss", "batch_size", "halt_exploration_prob", "forward_dtype",
    "H_layers", "puzzle_emb_ndim", "puzzle_emb_len", "num_puzzle_identifiers",
)


def config_from_arch(arch: Mapping[str, Any], **overrides: Any) -> EqRConfig:
    """Translate the release's ``config["arch"]`` into an :class:`EqRConfig`.

    Args:
        arch: The ``arch`` mapping of an official checkpoint's config.
        **overrides: EqRConfig fields to set explicitly (e.g. ``seq_len``, ``vocab_size``).

    Returns:
        The config. ``mlp_t: true`` selects the ``"mlp_t"`` mixer, otherwise ``"attention"``.

    Raises:
        ValueError: On an unknown arch key, or puzzle embeddings (not supported by EqR here).
    """
    check_keys("official arch config key", arch, [*_ARCH_FIELDS, *_ARCH_IGNORED, "mlp_t", "rms_norm_eps"])
    if int(arch.get("puzzle_emb_ndim", 0) or 0) > 0 or int(arch.get("puzzle_emb_len", 0) or 0) > 0:
        raise ValueError(
            "official arch uses puzzle embeddings "
            f"(puzzle_emb_ndim={arch.get('puzzle_emb_ndim')}, puzzle_emb_len={arch.get('puzzle_emb_len')}); "
            "EqR has no puzzle-embedding positions"
        )
    values: dict[str, Any] = {k: arch[k] for k in _ARCH_FIELDS if k in arch and arch[k] is not None}
    if "pos_encodings" in arch:
        values["pos_encodings"] = arch["pos_encodings"] or "none"
    values["mixer"] = "mlp_t" if bool(arch.get("mlp_t", False)) else "attention"
    if "rms_norm_eps" in arch:
        values["rms_eps"] = float(arch["rms_norm_eps"])
    for key in ("H_cycles", "L_cycles", "L_layers", "hidden_size", "num_heads", "halt_max_steps"):
        if key in values:
            values[key] = int(values[key])
    values.update(overrides)
    return EqRConfig.from_dict(values)


def normalize_official_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip ``_orig_mod`` segments, a leading ``model.`` and the ``inner.`` prefix from keys.

    Raises:
        ValueError: When two keys collapse to the same name.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = [p for p in key.split(".") if p != "_orig_mod"]
        if parts and parts[0] == "model":
            parts = parts[1:]
        if parts and parts[0] == "inner":
            parts = parts[1:]
        name = ".".join(parts)
        if name in out:
            raise ValueError(f"checkpoint keys collide after normalisation: {key!r} -> {name!r}")
        out[name] = value
    return out


def _read(source: Any) -> Any:
    """A path is loaded without running code from it (weights only); anything else is passed on."""
    if isinstance(source, (str, os.PathLike)):
        return safe_torch_load(Path(source))
    return source


def _pick_state(ckpt: Mapping[str, Any], prefer_ema: bool, origin: str = "<dict>") -> dict[str, Tensor]:
    ema = ckpt.get("ema")
    if prefer_ema and isinstance(ema, Mapping) and ema:
        shadow = ema.get("shadow", ema)
        tensors = {k: v for k, v in shadow.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    model = ckpt.get("model")
    if not isinstance(model, Mapping):
        raise ValueError(f"checkpoint {origin} has no 'model' state dict (keys: {sorted(map(str, ckpt))})")
    bad = sorted(str(k) for k, v in model.items() if not isinstance(v, Tensor))
    if bad:
        raise ValueError(f"checkpoint {origin}: 'model' entries {bad[:5]} are not tensors; "
                         "the file is damaged or not an EqR checkpoint")
    return dict(model)


def load_strict(model: nn.Module, state: Mapping[str, Tensor], origin: str) -> nn.Module:
    """Load ``state`` into ``model`` strictly; every missing, unexpected or mis-shaped tensor is named."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {origin} does not match {type(model).__name__}({getattr(model, 'config', '')})"]
        if shapes:
            lines.append("shape mismatches: " + "; ".join(shapes))
            if any("mlp_t" in s for s in shapes):
                lines.append("(a token-mixer width other than seq_len usually means extra "
                             "puzzle-embedding positions, which EqR does not have)")
        if missing:
            lines.append(f"missing: {missing}")
        if unexpected:
            lines.append(f"unexpected: {unexpected}")
        raise ValueError("\n".join(lines))
    ref = next(iter(expected.values()))
    model.load_state_dict({k: v.to(ref.dtype) for k, v in state.items()}, strict=True)
    return model


def read_official(
    source: Any, *, prefer_ema: bool = True, seq_len: int | None = None, vocab_size: int | None = None
) -> tuple[EqRConfig, dict[str, Tensor], str]:
    """The configuration and weights of an official release checkpoint.

    Args:
        source: Path to ``eqr.pth``, the loaded dict (``model``/``ema``/``config``), or a bare
            state dict with official key names (then ``config`` defaults to the release's).
        prefer_ema: Use the EMA weights when the checkpoint has them.
        seq_len: Sequence length (the checkpoint does not record it; default 81).
        vocab_size: Vocabulary (default: the embedding table's row count).

    Returns:
        ``(config, state, origin)``: the :class:`EqRConfig`, the state dict in this package's
        parameter names and the file's name for messages (``EqR.from_official`` builds the model).

    Raises:
        ValueError: Missing/unexpected/mis-shaped tensors, or an unsupported arch.
    """
    ckpt = _read(source)
    origin = str(source) if isinstance(source, (str, os.PathLike)) else "<dict>"
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"official checkpoint {origin} holds a {type(ckpt).__name__}, not the release's dict "
                         "(model, ema, config); check the path")
    if ckpt.get("format") == NATIVE_FORMAT:
        raise ValueError(f"{origin} is already an eqsolve checkpoint ({NATIVE_FORMAT}), not an official "
                         "one; use it as it is (EqR.from_checkpoint, --checkpoint), no import needed")
    if "model" in ckpt or "ema" in ckpt:
        state = normalize_official_keys(_pick_state(ckpt, prefer_ema, origin))
        config = ckpt.get("config") or {}
        arch = dict(config.get("arch", {})) if isinstance(config, Mapping) else {}
    else:  # a bare state dict
        state, arch = normalize_official_keys(ckpt), {"mlp_t": True}
    overrides: dict[str, Any] = {}
    if seq_len is not None:
        overrides["seq_len"] = seq_len
    emb = state.get("embed_tokens.embedding_weight")
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    elif emb is not None and "vocab_size" not in arch:
        overrides["vocab_size"] = int(emb.shape[0])
    return config_from_arch(arch, **overrides), state, origin


def download_official(
    repo_id: str = "locuslab/EqR-model",
    filename: str = "sudoku-extreme/eqr.pth",
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download an official checkpoint from the HuggingFace hub; its local path.

    Needs the optional ``huggingface_hub`` package (``pip install eqsolve[hub]``).

    Args:
        repo_id: Hub repository.
        filename: File inside it.
        revision: Git revision (pin it for reproducibility).
        cache_dir: Hub cache folder.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # optional dependency
        raise ImportError(
            "loading from the hub needs huggingface_hub: pip install 'eqsolve[hub]'"
        ) from exc
    return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision,
                                cache_dir=cache_dir))


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, ema: Mapping[str, Tensor] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a native checkpoint atomically (temp file in the same folder, then ``os.replace``).

    Args:
        model: The model (an :class:`~eqsolve.models.eqr.EqR`: it has a ``config``).
        path: Destination file.
        ema: Optional EMA weights (same names as ``model.state_dict()``).
        extra: Optional JSON-like metadata (step, seed, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": NATIVE_FORMAT,
        "config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": None if ema is None else {k: v.detach().cpu() for k, v in ema.items()},
        "extra": dict(extra or {}),
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path: Any, *, prefer_ema: bool = True) -> tuple[EqRConfig, dict[str, Tensor], str]:
    """The configuration and weights of an eqsolve checkpoint (an official one is read by :func:`read_official`).

    eqsolve checkpoints are dicts with ``model`` (state dict), optional ``ema`` (preferred) and
    ``config`` (an :class:`EqRConfig` as a dict), optionally ``format: "eqsolve.eqr/1"``; other
    keys (optimizer, step, ...) are ignored.

    Args:
        path: File path or an already loaded dict.
        prefer_ema: Use the EMA weights when present.

    Returns:
        ``(config, state, origin)`` (``EqR.from_checkpoint`` builds the model).
    """
    ckpt = _read(path)
    origin = str(path) if isinstance(path, (str, os.PathLike)) else "<dict>"
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"checkpoint {origin} holds a {type(ckpt).__name__}, not an EqR checkpoint's dict "
                         "(model, config, ...); check the path")
    if "format" in ckpt and ckpt["format"] != NATIVE_FORMAT:
        raise ValueError(f"checkpoint {origin} has format {ckpt['format']!r}; this eqsolve reads "
                         f"{NATIVE_FORMAT!r}")
    config = ckpt.get("config")
    # a config that is an EqRConfig dict (no official `arch`) marks an eqsolve checkpoint
    native = ckpt.get("format") == NATIVE_FORMAT or (
        isinstance(config, Mapping) and "arch" not in config and "mixer" in config
    )
    if not native:
        config, state, _ = read_official(ckpt, prefer_ema=prefer_ema)
        return config, state, origin
    return EqRConfig.from_dict(dict(config)), _pick_state(ckpt, prefer_ema, origin), origin
