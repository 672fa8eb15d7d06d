"""Readers of deployed (compiled) enforcement output, back into per-pair connectivity."""
