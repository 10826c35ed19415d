"""The embedded sample world: one small, seeded world of animal characters and places.

It feeds every stage with data generated on the spot, so the whole pipeline runs on CPU without
a network: TinyStories-like stories and WikiText-like articles for pre-training, instructions
with program-checkable constraints for SFT, and preference pairs for DPO.
`dataset.sample_world.check.satisfies(constraints_json, response)` checks an answer.
"""
