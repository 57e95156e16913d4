"""Offline side: datasets, teacher training, progressive distillation, export of the tier family."""
