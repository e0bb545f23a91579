"""EqR throughput: eqsolve's ``EqR.map`` against the official EqR code, and ``eqsolve bench`` time
against breadth and depth.

Run (about 3 minutes on this 2-core machine):

    nice -n 5 python benchmarks/eqr_throughput.py   # -> benchmarks/results/eqr_throughput.{json,md}

Method. The official code (github locuslab/EqR) is read from a local snapshot of the repository
(``--official``, a bare git directory; its ``models/`` package is written to a temporary folder
and imported from there, with two tiny stand-ins for imports it needs only for configuration
and error messages: ``pydantic.BaseModel`` and ``utils.printing``). Both models get the same
configuration (the release's Sudoku-Extreme architecture unless ``--hidden`` etc. say
otherwise, float32 on the CPU, path noise off), the same weights (the official model's state
dict loaded into eqsolve's with ``EqR.from_official``; the first outer step's outputs are
compared), the same batch and the same start. One outer step is one call of eqsolve's ``map``
and one ``deep_recursion`` of the official inner network (``H_cycles x (L_cycles + 1)``
block-stack applications), under ``torch.no_grad()``. Throughput is puzzles x outer steps per
second: the median of ``--runs`` timed runs of ``--steps`` steps after a warm-up, the two
implementations alternated (which one goes first alternates between rounds). The bench grid runs ``eqsolve bench`` (the shipped reasoner, the
default solvers) as a subprocess per cell and reports its wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, also when imported by path
from _common import device_name  # noqa: E402

from eqsolve._io import atomic_write_json, atomic_write_text
from eqsolve.models import EqR

RESULTS = Path(__file__).resolve().parent / "results"
OFFICIAL = Path("/work/.mirror/locuslab+EqR/repo")
FILES = ("models/__init__.py", "models/common/__init__.py", "models/layers.py", "models/eqr.py")


def _stub_modules() -> None:
    """Stand-ins for the two imports the official model code needs beyond torch."""
    if "pydantic" not in sys.modules:
        pydantic = types.ModuleType("pydantic")

        class BaseModel:  # fields from annotations, defaults from class attributes
            def __init__(self, **kwargs):
                for name in getattr(type(self), "__annotations__", {}):
                    if name in kwargs:
                        setattr(self, name, kwargs.pop(name))
                    elif hasattr(type(self), name):
                        setattr(self, name, getattr(type(self), name))
                    else:
                        raise TypeError(f"missing field {name}")
                if kwargs:
                    raise TypeError(f"unknown fields {sorted(kwargs)}")

        pydantic.BaseModel = BaseModel
        sys.modules["pydantic"] = pydantic
    utils = types.ModuleType("utils")
    printing = types.ModuleType("utils.printing")

    def colored_exception(exc_class, message):
        raise exc_class(str(message))

    printing.colored_exception = colored_exception
    utils.printing = printing
    sys.modules["utils"], sys.modules["utils.printing"] = utils, printing


def export_official(source: Path, dest: Path) -> str:
    """Write the official ``models`` package (and its commit, in ``COMMIT``) into ``dest``.

    ``source`` is a bare git directory of locuslab/EqR, or a folder an earlier export wrote (a
    machine without the snapshot, e.g. a GPU machine, gets such a folder carried along).
    """
    if (source / "COMMIT").is_file():
        rev = (source / "COMMIT").read_text().strip()
        texts = {name: (source / name).read_text() for name in FILES}
    else:
        rev = subprocess.run(["git", f"--git-dir={source}", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        texts = {name: subprocess.run(["git", f"--git-dir={source}", "show", f"HEAD:{name}"], capture_output=True,
                                      text=True, check=True).stdout for name in FILES}
    for name, text in texts.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (dest / "COMMIT").write_text(rev + "\n")
    return rev


def load_official(source: Path, tmp: Path):
    """Write the official ``models`` package into ``tmp`` (:func:`export_official`) and import it."""
    rev = export_official(source, tmp)
    _stub_modules()
    sys.path.insert(0, str(tmp))
    import models.eqr as official_eqr  # noqa: PLC0415

    return official_eqr, rev


def build_pair(official_eqr, arch: dict, seed: int, device: torch.device):
    torch.manual_seed(seed)
    official = official_eqr.EqRModel(arch).eval()
    ckpt = {"model": {"_orig_mod.model." + k: v for k, v in official.state_dict().items()},
            "config": {"arch": arch}}
    mine = EqR.from_official(ckpt, prefer_ema=False, seq_len=arch["seq_len"], vocab_size=arch["vocab_size"]).eval()
    return official.to(device), mine.to(device)


def _wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(official, mine, batch: int, steps: int, runs: int, seed: int,
              device: torch.device | None = None) -> dict:
    device = torch.device("cpu") if device is None else device
    cfg = mine.config
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, cfg.vocab_size, (batch, cfg.seq_len), generator=g).to(device)
    inner = official.inner
    with torch.no_grad():
        x_mine = mine.embed(tokens)
        s0 = mine.init_state(batch, generator=g).to(device)
        x_off = inner._input_embeddings(tokens)
        seq = {"cos_sin": inner._cos_sin()}

        def run_mine():
            s = s0
            for _ in range(steps):
                s = mine.map(s, x_mine, noise=0.0)
            _wait(device)
            return s

        def run_official():
            z_h, z_l = s0[:, 0], s0[:, 1]
            for _ in range(steps):
                z_h, z_l = inner.deep_recursion(z_h, z_l, x_off, seq)
            _wait(device)
            return torch.stack((z_h, z_l), 1)

        a, b = run_mine(), run_official()  # warm-up, and the two must agree
        max_diff = float((a - b).abs().max())
        times = {"eqsolve": [], "official": []}
        pair = (("eqsolve", run_mine), ("official", run_official))
        for i in range(runs):
            for name, fn in pair if i % 2 == 0 else pair[::-1]:  # which goes first alternates
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    out = {"batch": batch, "steps": steps, "max_abs_state_diff": max_diff, "runs": times}
    for name, ts in times.items():
        out[f"{name}_puzzle_steps_per_s"] = batch * steps / statistics.median(ts)
    # The ratio is the median over the alternated pairs (official time / eqsolve time of the same
    # round): the machine's speed drifts between rounds, and a pair sees the same drift.
    pairs = sorted(o / e for e, o in zip(times["eqsolve"], times["official"]))
    out["speed_ratio_eqsolve_over_official"] = statistics.median(pairs)
    out["speed_ratio_quartiles"] = statistics.quantiles(pairs, n=4) if len(pairs) >= 2 else [pairs[0]] * 3
    return out


def bench_grid(breadths: list[int], depths: list[int], limit: int, threads: int, device: str = "cpu") -> list[dict]:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cells = [(b, depths[0]) for b in breadths] + [(breadths[0], d) for d in depths[1:]]
    for breadth, depth in cells:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "eqsolve", "bench", "--limit", str(limit), "--depth", str(depth),
                   "--breadth", str(breadth), "--device", device, "--out", out]
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            wall = time.perf_counter() - t
        rows.append({"breadth": breadth, "depth": depth, "puzzles": limit, "wall_s": wall})
        print(f"bench breadth {breadth} depth {depth}: {wall:.1f}s", flush=True)
    return rows


def to_markdown(r: dict) -> str:
    m = r["meta"]
    lines = ["# EqR throughput: eqsolve vs the official code; `eqsolve bench` against breadth and depth", "",
             f"Command: `{m['command']}`  ",
             f"Device: {m.get('device_name', 'CPU')}. "
             f"torch {m['torch']}, python {m['python']}, {m['platform']}, {m['cpus']} CPUs, torch threads "
             f"{m['threads']}; official EqR at {m['official_commit'][:12]}; eqsolve commit {m['commit']}; {m['date']}.  ",
             f"Load average {m['loadavg_before']} before, {m['loadavg_after']} after"
             + (f"; {m['note']}" if m.get("note") else "") + ".", "",
             "## One outer step (eqsolve `EqR.map` vs official `deep_recursion`), float32, no grad", "",
             "| config | batch | steps | eqsolve puzzle-steps/s | official puzzle-steps/s | eqsolve / official "
             "(quartiles) | max state diff |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in r["throughput"]:
        q = c.get("speed_ratio_quartiles")
        spread = f" ({q[0]:.3f}-{q[2]:.3f})" if q else ""
        lines.append(f"| {c['config']} | {c['batch']} | {c['steps']} | {c['eqsolve_puzzle_steps_per_s']:.2f} | "
                     f"{c['official_puzzle_steps_per_s']:.2f} | {c['speed_ratio_eqsolve_over_official']:.3f}{spread} | "
                     f"{c['max_abs_state_diff']:.1e} |")
    lines += ["", "Throughput is the median over the timed runs; the speed ratio is the median over the "
              f"{len(r['throughput'][0]['runs']['eqsolve']) if r['throughput'] else 0} alternated pairs of runs "
              "(official time / eqsolve time in the same round), with its quartiles: above 1, eqsolve's map is faster."]
    if r["bench"]:
        lines += ["", "## `eqsolve bench` wall time (shipped reasoner, default solvers, "
                  f"{r['bench'][0]['puzzles']} puzzles, subprocess incl. start-up)", "",
                  "| breadth | depth | wall (s) |", "|---:|---:|---:|"]
    for b in r["bench"]:
        lines.append(f"| {b['breadth']} | {b['depth']} | {b['wall_s']:.1f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=OFFICIAL,
                    help="bare git dir of locuslab/EqR, or a folder written by --export-official")
    ap.add_argument("--export-official", type=Path, default=None, metavar="DIR",
                    help="only write the official models/ package (and COMMIT) into DIR, to carry it to a GPU machine")
    ap.add_argument("--device", default="cpu", help="device of both models and of the bench grid (cpu, cuda)")
    ap.add_argument("--batches", default="4,16", help="batch of the release and the small configuration")
    ap.add_argument("--no-grid", action="store_true", help="skip the eqsolve bench grid (breadth x depth)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=4, help="puzzles per bench cell")
    ap.add_argument("--breadths", default="1,8,32,128")
    ap.add_argument("--depths", default="8,32,128,256")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if a.export_official is not None:
        print("official EqR", export_official(a.official, a.export_official), "->", a.export_official)
        return {}
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    meta = {"command": "nice -n 5 python benchmarks/eqr_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "commit": commit, "note": a.note,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()], "device": device.type,
            "device_name": device_name(device)}
    base = dict(batch_size=1, seq_len=81, vocab_size=11, H_cycles=3, L_cycles=6, H_layers=0, L_layers=2,
                hidden_size=512, expansion=4, num_heads=8, pos_encodings="none", halt_max_steps=16,
                halt_exploration_prob=0.1, forward_dtype="float32", mlp_t=True, lambda_=0.95, noise_scale=0.0)
    b_release, b_small = (int(b) for b in a.batches.split(","))
    configs = [("release (mlp_t, d=512, H3 L6, 2 layers)", base, b_release, 2),
               ("small (mlp_t, d=128, H3 L6, 2 layers)", {**base, "hidden_size": 128}, b_small, 4)]
    with tempfile.TemporaryDirectory() as tmp:
        official_eqr, rev = load_official(a.official, Path(tmp))
        meta["official_commit"] = rev
        throughput = []
        for name, arch, batch, steps in configs:
            official, mine = build_pair(official_eqr, arch, seed=0, device=device)
            row = {"config": name, "arch": arch, **time_pair(official, mine, batch, steps, a.runs, seed=1,
                                                             device=device)}
            throughput.append(row)
            print(f"{name}: eqsolve {row['eqsolve_puzzle_steps_per_s']:.2f}, official "
                  f"{row['official_puzzle_steps_per_s']:.2f} puzzle-steps/s "
                  f"(ratio {row['speed_ratio_eqsolve_over_official']:.3f}, diff {row['max_abs_state_diff']:.1e})",
                  flush=True)
    stem = "eqr_throughput" if device.type == "cpu" else f"eqr_throughput_{device.type}"

    def write(bench: list[dict]) -> dict:
        meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        results = {"meta": meta, "throughput": throughput, "bench": bench}
        atomic_write_json(a.out / f"{stem}.json", results)
        atomic_write_text(a.out / f"{stem}.md", to_markdown(results))
        return results

    write([])  # the throughput table first: a grid cut short by a time limit leaves it written
    if a.no_grid:
        return write([])
    return write(bench_grid([int(b) for b in a.breadths.split(",")], [int(d) for d in a.depths.split(",")],
                            a.limit, a.threads, a.device))


if __name__ == "__main__":
    main()
