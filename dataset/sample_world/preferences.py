"""Sample DPO pairs: the chosen answer meets the instruction, the rejected one breaks it.

The rejected answer is the same story (same random stream) told with one thing wrong: another
name, animal, place, object or ending feeling, too many sentences, or a wrong fact for a
question. So `satisfies(constraints, chosen)` is True and `satisfies(constraints, rejected)` is
False for every pair, and the two answers differ in little else.
"""

import random
from collections import Counter

from dataset.sample_world.check import satisfies
from dataset.sample_world.tasks import draw_task
from dataset.sample_world.world import build_world


def dpo_rows(seed: int, split: str, count: int) -> tuple[list[dict], Counter]:
    """`count` pairs for `split`, and how many pairs use each kind of violation."""
    world = build_world(seed)
    rng = random.Random(f"sample-dpo-{seed}-{split}")
    rows, kinds = [], Counter()
    while len(rows) < count:
        task = draw_task(rng, world, split)
        if not satisfies(task.constraints, task.answer):
            continue
        makers = list(task.violations)
        rng.shuffle(makers)
        # The first violation the checker really rejects (a random friend could, say, happen to
        # carry the requested name and so save a "wrong name" answer).
        broken = ((kind, make()) for kind, make in makers)
        kind, rejected = next(
            ((kind, text) for kind, text in broken if not satisfies(task.constraints, text)),
            (None, None),
        )
        if rejected is None:
            continue
        kinds[kind] += 1
        rows.append(
            {
                "prompt": [{"role": "user", "content": task.prompt}],
                "chosen": [{"role": "assistant", "content": task.answer}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "constraints": task.constraints,
            }
        )
    return rows, kinds
