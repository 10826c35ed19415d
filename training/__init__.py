"""The one training engine shared by pre-training, SFT and DPO (see training/trainer.py)."""
