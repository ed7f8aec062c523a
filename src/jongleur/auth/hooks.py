"""What the API's generation code calls, per request (no-ops outside an accounted request).

- `admit(model, prompt_tokens, max_tokens, n)`: the key's max input/output tokens (input too long
  -> 400; max_tokens capped to the key's limit), then TPM + quota reservation (429). Returns the
  possibly capped max_tokens.
- `add_tokens(prompt, completion)`: actual tokens, for reconciliation and the usage record.
- `guard_input(text, param)`: input guardrails (400 `content_policy_violation` when refused).
- `output_guard()`: a per-choice `OutputGuard` when the policy filters output, else None;
  `record_output_findings(guard)` when the stream ends.
- `model_visible(name, aliases)`: the caller's scopes and clearance allow this model.
"""

from __future__ import annotations

from collections.abc import Iterable

from jongleur.auth import accounting
from jongleur.auth.errors import PolicyError
from jongleur.auth.principal import Level
from jongleur.guard import GuardBlocked, OutputGuard, check_input

_limiter_box: list[object] = []


def set_limiter(limiter: object) -> None:
    _limiter_box[:] = [limiter]


def admit(model: str, prompt_tokens: int, max_tokens: int, n: int = 1) -> int:
    account = accounting.current()
    if account is None or account.principal is None:
        return max_tokens
    p = account.principal
    account.model = account.model or model
    pol = p.policy
    if pol.max_input_tokens is not None and prompt_tokens > pol.max_input_tokens:
        raise PolicyError(400, f"the prompt has {prompt_tokens} tokens; this key allows at most "
                          f"{pol.max_input_tokens}", code="input_too_long", param="messages")
    if pol.max_output_tokens is not None:
        max_tokens = min(max_tokens, pol.max_output_tokens)
    if _limiter_box:
        from jongleur.auth.limits import Limiter

        limiter = _limiter_box[0]
        assert isinstance(limiter, Limiter)
        account.reserved.append(limiter.reserve(p, prompt_tokens + max_tokens * n))
    return max_tokens


def add_tokens(prompt: int, completion: int) -> None:
    account = accounting.current()
    if account is not None:
        account.prompt_tokens += prompt
        account.completion_tokens += completion


def guard_input(text: str, param: str = "messages") -> str:
    account = accounting.current()
    if account is None or account.principal is None:
        return text
    try:
        out, findings = check_input(text, account.guard_policy)
    except GuardBlocked as exc:
        account.findings.append(exc.finding)
        raise PolicyError(400, exc.message, code="content_policy_violation", param=param) from None
    account.findings.extend(findings)
    return out


def output_guard() -> OutputGuard | None:
    account = accounting.current()
    if account is None or account.principal is None:
        return None
    guard = OutputGuard(account.guard_policy)
    return guard if guard.active else None


def record_output_findings(guard: OutputGuard | None) -> None:
    account = accounting.current()
    if guard is not None and account is not None:
        account.findings.extend(guard.findings())


def model_visible(name: str, aliases: Iterable[str] = ()) -> bool:
    account = accounting.current()
    if account is None or account.principal is None:
        return True
    level = account.model_levels.get(name.lower(), Level.PUBLIC)
    for alias in aliases:
        level = max(level, account.model_levels.get(alias.lower(), Level.PUBLIC))
    return account.principal.may_use_model(name, level)
