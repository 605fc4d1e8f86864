"""The learning loop's trainer service: windows of labelled examples → LoRA fine-tunes."""
