"""Tokenizer (HF ``tokenizers``) and chat template (jinja2, sandboxed) of an exported model."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer


class ChatTemplateError(ValueError):
    """The messages do not fit the model's chat template (its own ``raise_exception``)."""


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


class Tokenizer:
    def __init__(self, directory: Path) -> None:
        directory = Path(directory)
        self._tok = HFTokenizer.from_file(str(directory / "tokenizer.json"))
        cfg: dict[str, Any] = {}
        if (directory / "tokenizer_config.json").is_file():
            cfg = json.loads((directory / "tokenizer_config.json").read_text())
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if template is None and (directory / "chat_template.jinja").is_file():
            template = (directory / "chat_template.jinja").read_text()
        self.chat_template: str | None = template
        self.bos_token = self._token_str(cfg.get("bos_token"))
        self.eos_token = self._token_str(cfg.get("eos_token"))
        self._compiled = None
        if template:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
            self._compiled = env.from_string(template)

    @staticmethod
    def _token_str(value: Any) -> str:
        if isinstance(value, dict):
            return value.get("content", "")
        return value or ""

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def to_json(self) -> str:
        """The tokenizer as ``tokenizer.json`` text (what llguidance builds its token trie from)."""
        return self._tok.to_str()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    @property
    def template_has_tools(self) -> bool:
        """The chat template renders a ``tools`` list itself (else the service describes tools in a system turn)."""
        return bool(self.chat_template) and "tools" in self.chat_template

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None) -> str:
        if self._compiled is None:
            raise ChatTemplateError("this model has no chat template; use /v1/completions or /generate")
        extra = {"tools": tools} if tools else {}
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **extra)
        except ChatTemplateError:
            raise
        except (TemplateError, TypeError, KeyError) as exc:
            raise ChatTemplateError(f"messages do not fit the chat template: {exc}") from exc


class IncrementalDecoder:
    """Text of a growing token list, released piece by piece.

    Holds back a trailing incomplete UTF-8 character and any tail that could be the start of a stop
    string; finds stop strings across token boundaries.
    """

    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.sent = 0          # characters of the text already released
        self.text = ""

    def add(self, token_id: int | None) -> tuple[str, bool]:
        """Add a token; returns (new releasable text, stop string hit)."""
        if token_id is not None:
            self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids)
        if self.stop:
            hits = [i for i in (self.text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0]
            if hits:
                cut = min(hits)
                self.text = self.text[:cut]
                out = self.text[self.sent:]
                self.sent = len(self.text)
                return out, True
        end = len(self.text)
        if self.text.endswith("\ufffd"):
            end -= 1
        for s in self.stop:  # hold back a tail that may grow into a stop string
            for k in range(min(len(s) - 1, end - self.sent), 0, -1):
                if self.text[end - k:end] == s[:k]:
                    end -= k
                    break
        if end <= self.sent:
            return "", False
        out = self.text[self.sent:end]
        self.sent = end
        return out, False

    def flush(self) -> str:
        """Release whatever was held back (the sequence ended without a stop string)."""
        out = self.text[self.sent:]
        self.sent = len(self.text)
        return out
