"""Sample SFT conversations: one user instruction, one assistant answer, checkable constraints.

>>> rows = sft_rows(seed=0, split="train", count=2)
>>> sorted(rows[0])
['constraints', 'messages']
"""

import random

from dataset.sample_world.check import satisfies
from dataset.sample_world.tasks import draw_task
from dataset.sample_world.world import build_world


def sft_rows(seed: int, split: str, count: int) -> list[dict]:
    """`count` conversations whose instructions belong to `split` (see tasks.split_of)."""
    world = build_world(seed)
    rng = random.Random(f"sample-sft-{seed}-{split}")
    rows = []
    while len(rows) < count:
        task = draw_task(rng, world, split)
        if not satisfies(task.constraints, task.answer):  # never teach an answer that fails
            continue
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": task.prompt},
                    {"role": "assistant", "content": task.answer},
                ],
                "constraints": task.constraints,
            }
        )
    return rows
