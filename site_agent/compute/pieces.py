"""A task's blocks cut into pieces of bounded size for computing, and the pieces joined again.

The coordinator's block size (variants per result block, 8,192 by default) sets what is protected and
sent. What a site computes at once is bounded separately, by ``[compute] chunk_mib`` of int8 genotypes
per piece: a block of 8,192 variants of 33,000 samples is 270 MB of genotypes, before the kernels'
temporaries, so it is cut into pieces of ``chunk_mib << 20 // n`` variants. Memory is then set by the
piece size times the pieces computing, whatever the number of samples. There are also more pieces to
spread over the workers.

Each variant's values depend only on that variant's genotypes: the kernels reduce over samples, never
across variants. Where a block is cut can still change the last bits of a value (BLAS computes a
product with a few columns and one with many columns in different orders). The coordinator's block
size has the same effect: these are rounding differences, ~1e-12 relative. The cut depends only on
the block, the number of samples and ``chunk_mib``, never on the backend. So the in-process backend and
a Dask cluster return the same values bit for bit. Analyses whose blocks share state
(``sequential_blocks``) are not cut.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from engine.tasks import TaskSpec
from site_agent.compute.jobs import BlockJob


def piece_bounds(start: int, stop: int, n_samples: int, max_bytes: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into consecutive pieces of at most ``max_bytes // n_samples`` variants (at least 1)."""
    width = max(1, max_bytes // max(1, n_samples))
    return [(a, min(a + width, stop)) for a in range(start, stop, width)] or [(start, stop)]


def task_pieces(task: TaskSpec, per_variant: Mapping[str, np.ndarray], n_samples: int, max_bytes: int | None
                ) -> tuple[list[int], Iterator[BlockJob]]:
    """The pieces of every block of ``task``, in order, and how many pieces each block has.

    ``per_variant`` are the task inputs with one row per variant (sliced per piece); ``max_bytes``
    None keeps every block whole.
    """
    bounds = [task.block_bounds(block) for block in range(task.n_blocks)]
    pieces = [[(start, stop)] if max_bytes is None else piece_bounds(start, stop, n_samples, max_bytes)
              for start, stop in bounds]

    def jobs() -> Iterator[BlockJob]:
        for block, block_pieces in enumerate(pieces):
            for a, b in block_pieces:
                yield BlockJob(block, task.variant_index[a:b], task.flip[a:b],
                               {**task.inputs, **{name: values[a:b] for name, values in per_variant.items()}})

    return [len(p) for p in pieces], jobs()


def join_pieces(values: Iterator[np.ndarray], counts: list[int]) -> Iterator[np.ndarray]:
    """Each block's values ``(m, width)``: its ``counts[block]`` pieces from ``values``, stacked in order."""
    for count in counts:
        parts = [next(values) for _ in range(count)]
        yield parts[0] if count == 1 else np.concatenate(parts, axis=0)
