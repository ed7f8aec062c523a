"""Tokenization, chat templates, incremental detokenization and tool-call parsing."""

from jongleur.tokenizer.detokenizer import DetokenizerDelta, IncrementalDetokenizer
from jongleur.tokenizer.stop_strings import StopAutomaton
from jongleur.tokenizer.tokenizer import Tokenizer, TokenizerInfo

__all__ = ["DetokenizerDelta", "IncrementalDetokenizer", "StopAutomaton", "Tokenizer", "TokenizerInfo"]
