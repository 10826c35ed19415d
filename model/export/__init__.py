"""Exports of a checkpoint for other tools: a transformers Llama folder (`python3 -m
model.export.hf`)."""
