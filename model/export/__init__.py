"""Exports of a checkpoint for other tools: a transformers Llama folder (`python3 -m
model.export.hf`) and a GGUF file with an Ollama Modelfile for llama.cpp and what is built on it
(`python3 -m model.export.gguf`). Both name the weights through model/export/llama_names.py."""
