"""Tokenization, chat templates, incremental detokenization and tool-call parsing.

`Tokenizer` (encode/decode, GGUF and HF folders, cached builds), `ChatTemplate` (sandboxed rendering,
`render_ids` that keeps user text plain), `IncrementalDetokenizer` (whole characters, stop strings),
`tool_parser_for` (hermes-style tool calls, complete and streaming).
"""

from jongleur.tokenizer.chat_template import (
    ChatTemplate,
    ChatTemplateError,
    RenderedPrompt,
    default_template_for,
)
from jongleur.tokenizer.detokenizer import DetokenizerDelta, IncrementalDetokenizer
from jongleur.tokenizer.stop_strings import StopAutomaton
from jongleur.tokenizer.tokenizer import Tokenizer, TokenizerInfo, gguf_identity
from jongleur.tokenizer.tool_calls import (
    ParsedOutput,
    ToolCall,
    ToolCallDelta,
    ToolParser,
    ToolStreamDelta,
    tool_parser_for,
)

__all__ = [
    "ChatTemplate", "ChatTemplateError", "DetokenizerDelta", "IncrementalDetokenizer", "ParsedOutput",
    "RenderedPrompt", "StopAutomaton", "Tokenizer", "TokenizerInfo", "ToolCall", "ToolCallDelta", "ToolParser",
    "ToolStreamDelta", "default_template_for", "gguf_identity", "tool_parser_for",
]
