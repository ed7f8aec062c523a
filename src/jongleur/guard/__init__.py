"""Guardrails: text in, text + findings out.

- `policy.GuardPolicy`: what to check, per key (or the default of a clearance level);
- `detectors`: PII (emails, phones, IBAN mod-97, cards with Luhn, French NIR with its key), secrets
  (API-key-looking strings), prompt-injection heuristics;
- `pipeline.check_input` (raises `GuardBlocked`), `pipeline.OutputGuard` (streams: holds back a
  window so nothing split across chunks leaks).
Findings never carry the matched text, only what kind was found and what was done.
"""

from jongleur.guard.pipeline import Finding, GuardBlocked, OutputGuard, check_input, check_output
from jongleur.guard.policy import GuardPolicy, default_policy

__all__ = ["Finding", "GuardBlocked", "GuardPolicy", "OutputGuard", "check_input", "check_output", "default_policy"]
