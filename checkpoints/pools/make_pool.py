"""Pre-build the pool `build_pool(None, gen_easy=2000, gen_hard=N, seed=0)` makes, with 2 workers (run from the repo root)."""
import sys
import time
from pathlib import Path

import numpy as np

from eqsolve.tasks.sudoku.generator import generate
from eqsolve.training.data import PuzzlePool, pool_source

n = int(sys.argv[1])
t = time.perf_counter()
easy = PuzzlePool.load(Path("checkpoints/pools/pool_easy2000_seed0.npz"))  # generate_easy(2000, seed=0)
assert easy.source == pool_source(None, 2000, 0, 0), easy.source
hard = generate(n, seed=1, workers=2)
q = np.concatenate([easy.questions, np.asarray([x for x, _, _ in hard]).reshape(-1, 81)]).astype(np.int64)
a = np.concatenate([easy.answers, np.asarray([y for _, y, _ in hard]).reshape(-1, 81)]).astype(np.int64)
pool = PuzzlePool(q, a, pool_source(None, 2000, n, 0))
pool.save(Path(f"checkpoints/pools/pool_easy2000_hard{n}_seed0.npz"))
r = np.asarray([z for _, _, z in hard])
print(pool.source, pool.fingerprint(), f"{time.perf_counter() - t:.0f} s", "ratings mean", r.mean(), "hard share", (r > 20).mean())
