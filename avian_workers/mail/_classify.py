"""Alert type and severity words, matched on whole words only.

The earlier worker searched substrings, so "allow" read as "low" and "DPI-SSL" could read as
"IPS". Every pattern here is anchored on word boundaries, and gaps between words are bounded
(`.{0,60}?`) so no input makes a pattern backtrack more than linearly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

Severity = Literal["critical", "high", "medium", "low", "info"]

ALERT_TYPES: tuple[str, ...] = (
    "ips_alert",
    "vpn_down",
    "license_expiring",
    "wan_down",
    "interface_down",
    "high_cpu",
    "high_memory",
    "gav_alert",
    "malware_detected",
    "botnet_alert",
    "atp_alert",
    "security_alert",
)
GENERIC_ALERT_TYPE = "security_alert"

# Link and tunnel states. "failed" is not one in a text about a sign-in ("IPsec Authentication
# Failed" is a wrong key or password, a security event), nor "lost"/"dropped" in a text about
# traffic ("UDP packet from WAN dropped" is a blocked packet); "connection lost", "tunnel lost"
# and "negotiation failed" always are.
_SIGN_IN = r"\b(?:authenticat\w*|auth|log-?in|logon|sign-?in|passwords?|credentials?)\b"
_TRAFFIC = r"\b(?:packets?|traffic|frames?|datagrams?)\b"
_LINK_NOUN = r"(?:connection|connectivity|link|carrier|tunnel|peer|WAN)"
_LINK_LOST = (
    rf"{_LINK_NOUN}\s+(?:was\s+|has\s+been\s+)?(?:lost|dropped)"
    rf"|(?:lost|dropped)\s+(?:the\s+)?(?:WAN\s+)?{_LINK_NOUN}"
)
_TUNNEL_FAILED = r"(?:tunnel|negotiation|phase\s*[12]|IKE|SA)\s+(?:has\s+)?failed"
_ALWAYS_DOWN = (
    rf"(?:down|disconnected|offline|unreachable|terminated|{_LINK_LOST}|{_TUNNEL_FAILED})"
)
_FAILED = r"(?:failed|failure)"
_LOST = r"(?:lost|dropped)"
# Back up, but not something restored on or through a link ("ARP entry restored on X0",
# "service restored via X2"): that link is not what came back.
_BACK = (
    r"(?:restored|recovered|re-?established|reconnected|back\s+(?:up|online)|up\s+again"
    r"|online\s+again|came\s+back)(?!\s+(?:on|via|through|to|using)\b)"
)
# A standby taking over is an outage that names its workaround, not a recovery.
_FAILOVER = r"\b(?:fail-?over|backup|secondary|alternate|standby|redundant)\b"
# A recovery that has not happened: "could not be re-established", "will be restored by 14:00".
_NOT_YET = r"\b(?:not|never|cannot|can't|couldn't|won't|will|yet|pending|expected|until)\b"
# Narration of the outage that preceded the recovery: "restored after being down", "(was offline".
_EARLIER = r"\b(?:after|was|were|been|being|following)\b"
DOWN_TYPES = frozenset({"vpn_down", "wan_down", "interface_down"})
"""Types of a link or tunnel going down, or coming back (then `info`, see link_recovery)."""


def _rule(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns), re.IGNORECASE)


# Most specific first: "License Expiring: IPS License ..." is about the licence, "WAN Down:
# Primary WAN Interface Offline" about the WAN, "Gateway Anti-Virus" is not generic malware.
# The security services come before the link states: in "IPS Prevention Alert: packet dropped
# on interface X1" or "Botnet Filter: WAN connection dropped", dropped means blocked.
type _Rules = tuple[tuple[str, re.Pattern[str]], ...]
_SERVICE_RULES: _Rules = (
    (
        "license_expiring",
        _rule(r"\blicen[cs]es?\b.{0,60}?\bexpir\w*", r"\bexpir\w*\b.{0,60}?\blicen[cs]es?\b"),
    ),
    ("atp_alert", _rule(r"\bATP\b", r"\badvanced\s+threat\b")),
    ("botnet_alert", _rule(r"\bbotnets?\b")),
    ("gav_alert", _rule(r"\bgateway\s+(?:AV|anti-?virus)\b", r"\bGAV\b")),
    # 'IPs' (IP addresses) is not IPS, whatever the case of the rest.
    ("ips_alert", _rule(r"\b(?-i:(?!IPs\b))IPS\b", r"\bintrusions?\b")),
)
_RESOURCE_RULES: _Rules = (
    (
        "high_cpu",
        _rule(
            r"\bhigh\s+CPU\b",
            r"\bCPU\b.{0,30}?\b(?:usage|utili[sz]ation|load|high|threshold)\b",
        ),
    ),
    (
        "high_memory",
        _rule(
            r"\b(?:high|low)\s+memory\b",
            r"\bmemory\b.{0,30}?\b(?:usage|utili[sz]ation|high|threshold|exhaust\w*)\b",
        ),
    ),
    (
        "malware_detected",
        # An 'Anti-Virus' product or its signatures are not a virus found.
        _rule(r"(?<!anti-)(?<!anti)\b(?:malware|ransomware|virus|viruses|trojan|spyware|worm)\b"),
    ),
)


def _link_rules(state: str) -> _Rules:
    """The down types, for the link-state words `state` of a text's context."""
    return (
        (
            "vpn_down",
            _rule(
                rf"\b(?:VPN|IPsec)\b.{{0,60}}?\b{state}\b",
                rf"\b{state}\b.{{0,30}}?\b(?:VPN|IPsec)\b",
                rf"\btunnels?\b.{{0,20}}?\b{state}\b",
            ),
        ),
        (
            "wan_down",
            _rule(
                rf"\bWAN\b.{{0,60}}?\b{state}\b",
                rf"\b{state}\b.{{0,30}}?\bWAN\b",
                # The WAN itself lost, whatever the text says of traffic: "Lost WAN connectivity".
                r"\bWAN\s+(?:was\s+|has\s+been\s+)?lost\b",
                r"\blost\s+(?:the\s+)?WAN\b",
            ),
        ),
        (
            "interface_down",
            _rule(
                rf"\b(?:interface|link)\b.{{0,40}}?\b{state}\b",
                rf"\b{state}\b.{{0,30}}?\binterface\b",
            ),
        ),
    )


def _down(*, sign_in: bool, traffic: bool) -> str:
    """The down words of a text that mentions a sign-in, or traffic, or neither, or both."""
    words = [_ALWAYS_DOWN, *([] if sign_in else [_FAILED]), *([] if traffic else [_LOST])]
    return "(?:" + "|".join(words) + ")"


_CONTEXTS = [(sign_in, traffic) for sign_in in (False, True) for traffic in (False, True)]
# By a text's context, (mentions a sign-in, mentions traffic): the type rules, where a link that
# came back makes the down types as a down word does, and the down words alone.
_TYPE_RULES: dict[tuple[bool, bool], _Rules] = {
    (sign_in, traffic): (
        *_SERVICE_RULES,
        *_link_rules(f"(?:{_down(sign_in=sign_in, traffic=traffic)}|{_BACK})"),
        *_RESOURCE_RULES,
    )
    for sign_in, traffic in _CONTEXTS
}
_DOWN_WORDS = {
    (sign_in, traffic): _rule(rf"\b{_down(sign_in=sign_in, traffic=traffic)}\b")
    for sign_in, traffic in _CONTEXTS
}
_SIGN_IN_WORD = _rule(_SIGN_IN)
_TRAFFIC_WORD = _rule(_TRAFFIC)
_BACK_WORD = _rule(rf"\b{_BACK}")
_FAILOVER_WORD = _rule(_FAILOVER)
_NOT_YET_WORD = _rule(_NOT_YET)
_EARLIER_WORD = _rule(_EARLIER)


def _context(text: str) -> tuple[bool, bool]:
    return bool(_SIGN_IN_WORD.search(text)), bool(_TRAFFIC_WORD.search(text))


# Words that make free-text mail an alert even when no specific type applies.
_GENERIC = _rule(
    r"\b(?:alerts?|alarms?|threats?|attacks?|suspicious|incident|violations?)\b",
    r"\bsecurity\s+(?:event|notification)\b",
)

_SEVERITY_WORDS: dict[str, Severity] = {
    "critical": "critical",
    "crit": "critical",
    "high": "high",
    "major": "high",
    "medium": "medium",
    "med": "medium",
    "moderate": "medium",
    "low": "low",
    "minor": "low",
    "info": "info",
    "informational": "info",
    "information": "info",
}
# SonicWall event priorities, by name and by syslog level (`pri=0` .. `pri=7`).
_PRIORITY_WORDS: dict[str, Severity] = {
    "emergency": "critical",
    "emerg": "critical",
    "alert": "critical",
    "critical": "critical",
    "crit": "critical",
    "error": "high",
    "err": "high",
    "warning": "medium",
    "warn": "medium",
    "notice": "low",
    "inform": "info",
    "informational": "info",
    "info": "info",
    "debug": "info",
}
_SYSLOG_LEVELS: tuple[Severity, ...] = (
    "critical",  # 0 emergency
    "critical",  # 1 alert
    "critical",  # 2 critical
    "high",  # 3 error
    "medium",  # 4 warning
    "low",  # 5 notice
    "info",  # 6 informational
    "info",  # 7 debug
)
# The first word, past any opening bracket or quote: 'Severity: [HIGH]', 'pri="4"'.
_FIRST_WORD = re.compile(r"[\s\[(\"']*([A-Za-z]+|[0-9]+)(?![A-Za-z0-9])")


def specific_alert_type(texts: Iterable[str]) -> str | None:
    """The most specific alert type named in the first of `texts` that names one.

    A link or tunnel coming back is its down type too (at `info`, see link_recovery): "WAN
    connection restored" is the WAN's news, not a generic security alert.
    """
    for text in texts:
        for alert_type, pattern in _TYPE_RULES[_context(text)]:
            if pattern.search(text):
                return alert_type
    return None


def link_recovery(texts: Iterable[str]) -> bool:
    """True when one of `texts` says the link or tunnel came back (see DOWN_TYPES).

    Judged at the text's last recovery word: not one that has not happened ("could not be
    re-established"), nor one a down word follows ("link restored, then link down"; "restored
    after being down" narrates the outage before it). A text that names a down state before
    the recovery is a recovery unless a standby took over ("VPN tunnel to HQ down; failover
    tunnel re-established" is still an outage).
    """
    return any(_is_recovery(text) for text in texts)


def _is_recovery(text: str) -> bool:
    backs = list(_BACK_WORD.finditer(text))
    if not backs:
        return False
    last = backs[-1]
    if _NOT_YET_WORD.search(text, max(0, last.start() - 20), last.start()):
        return False
    down = _DOWN_WORDS[_context(text)]
    later = down.search(text, last.end())
    if later is not None and not _EARLIER_WORD.search(text, last.end(), later.start()):
        return False
    return down.search(text, 0, last.start()) is None or not _FAILOVER_WORD.search(text)


def mentions_alert(texts: Iterable[str]) -> bool:
    """True when one of `texts` uses a word that marks a generic security alert."""
    return any(_GENERIC.search(text) for text in texts)


def severity_word(value: str) -> Severity | None:
    """The severity an explicit severity field states, judged by its first word only.

    Contract words and their synonyms come first; SonicWall priority names ("Alert", "Error")
    are accepted too, since firewalls put them in severity fields.
    """
    word = _first_word(value)
    if word is None:
        return None
    return _SEVERITY_WORDS.get(word) or _PRIORITY_WORDS.get(word)


def priority_severity(value: str) -> Severity | None:
    """The severity of a SonicWall priority: a name (`Warning`) or a syslog level (`4`)."""
    word = _first_word(value)
    if word is None:
        return None
    if word.isdigit():
        level = int(word) if len(word) == 1 else -1
        return _SYSLOG_LEVELS[level] if 0 <= level < len(_SYSLOG_LEVELS) else None
    # 'Priority: High' is a severity word where a priority name was expected.
    return _PRIORITY_WORDS.get(word) or _SEVERITY_WORDS.get(word)


def _first_word(value: str) -> str | None:
    match = _FIRST_WORD.match(value)
    return match.group(1).lower() if match else None
