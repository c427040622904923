"""Transformer builders and checkpoint importers that emit IR text and weights.

The GPT-2, Llama and BERT builders arrive with the transformer work (issue 6).
"""
