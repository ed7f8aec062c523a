"""Tokenization, chat templates, incremental detokenization and tool-call parsing."""

from jongleur.tokenizer.tokenizer import Tokenizer, TokenizerInfo

__all__ = ["Tokenizer", "TokenizerInfo"]
