"""The embedded sample world: one small, seeded world of animal characters and places that
feeds every stage offline (stories and articles, checkable instructions, preference pairs)."""
