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

_DOWN = r"(?:down|disconnected|offline|unreachable|lost|dropped|failed|failure|terminated)"
_BACK = (
    r"(?:restored|recovered|re-?established|reconnected|back\s+(?:up|online)|up\s+again"
    r"|online\s+again|came\s+back)"
)
_LINK = r"(?:VPN|IPsec|tunnels?|peers?|WAN|interfaces?|links?|ports?|connections?)"
DOWN_TYPES = frozenset({"vpn_down", "wan_down", "interface_down"})
"""Types of a link or tunnel going down, or coming back (then `info`, see link_recovery)."""


def _rule(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns), re.IGNORECASE)


# Most specific first: "License Expiring: IPS License ..." is about the licence, "WAN Down:
# Primary WAN Interface Offline" about the WAN, "Gateway Anti-Virus" is not generic malware.
# The security services come before the link states: in "IPS Prevention Alert: packet dropped
# on interface X1" or "Botnet Filter: WAN connection dropped", dropped means blocked.
_TYPE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "license_expiring",
        _rule(r"\blicen[cs]es?\b.{0,60}?\bexpir\w*", r"\bexpir\w*\b.{0,60}?\blicen[cs]es?\b"),
    ),
    ("atp_alert", _rule(r"\bATP\b", r"\badvanced\s+threat\b")),
    ("botnet_alert", _rule(r"\bbotnets?\b")),
    ("gav_alert", _rule(r"\bgateway\s+(?:AV|anti-?virus)\b", r"\bGAV\b")),
    # 'IPs' (IP addresses) is not IPS, whatever the case of the rest.
    ("ips_alert", _rule(r"\b(?-i:(?!IPs\b))IPS\b", r"\bintrusions?\b")),
    (
        "vpn_down",
        _rule(
            rf"\b(?:VPN|IPsec)\b.{{0,60}}?\b{_DOWN}\b",
            rf"\b{_DOWN}\b.{{0,30}}?\b(?:VPN|IPsec)\b",
            rf"\btunnels?\b.{{0,20}}?\b{_DOWN}\b",
        ),
    ),
    (
        "wan_down",
        _rule(rf"\bWAN\b.{{0,60}}?\b{_DOWN}\b", rf"\b{_DOWN}\b.{{0,30}}?\bWAN\b"),
    ),
    (
        "interface_down",
        _rule(
            rf"\b(?:interface|link)\b.{{0,40}}?\b{_DOWN}\b",
            rf"\b{_DOWN}\b.{{0,30}}?\binterface\b",
        ),
    ),
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

# Down words that do not speak of a link or tunnel: traffic a firewall dropped or lost, and a
# failed sign-in. They are blanked out before the down types are looked for, so "VPN tunnel down:
# IKE authentication failed" stays vpn_down, while "VPN login attempt failed" and "3 packets were
# dropped on interface X1" are not links down. Only where the traffic or the sign-in is what
# failed: "WAN connection lost, traffic rerouted to X2" is still a WAN down.
_NOT_A_LINK_STATE = _rule(
    r"\b(?:packets?|traffic|frames?|datagrams?)(?:\(s\))?"
    r"\s+(?:(?:was|were|is|are|being|been|has\s+been|have\s+been)\s+)?"
    r"(?:dropped|lost|discarded)\b",
    r"\b(?:dropped|lost|discarded)\s+(?:\d[\d,]*\s+)?(?:packets?|traffic|frames?|datagrams?)\b",
    r"\b(?:authentication|auth|log-?in|logon|sign-?in|password|credentials?)"
    r"(?:\s+(?:has|have|was|were|had|attempts?|checks?|requests?)){0,2}"
    r"\s+(?:failed|failures?|denied|rejected)\b",
)

# The link or tunnel itself came back: its name, at most three more words (none a down word; a
# name may be quoted or bracketed), then the recovery ("VPN tunnel HQ-to-Branch re-established",
# "WAN Interface (X1) restored"), or the other way round ("Restored WAN connection"), not
# something restored on or via a link ("ARP entry restored on interface X0").
_NAME = r"[\w.:/'\"()\[\]-]+"
_RECOVERY = _rule(
    rf"\b(?P<link>{_LINK})\b(?:\s+(?!{_DOWN}\b){_NAME}){{0,3}}?\s+"
    rf"(?:(?:is|was|has\s+been|have\s+been)\s+)?{_BACK}\b",
    rf"\b{_BACK}\s+(?!(?:on|to|via|for|from|by|at|in)\b)(?:the\s+)?(?:{_NAME}\s+)??"
    rf"(?P<named>{_LINK})\b",
)
_DOWN_WORD = _rule(rf"\b{_DOWN}\b")
_RECOVERED_TYPES = (
    ("vpn_down", _rule(r"VPN|IPsec|tunnel|peer")),
    ("wan_down", _rule(r"WAN")),
    ("interface_down", _rule(r"interface|link|port")),
)

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

    A text that only tells of a link or tunnel coming back gets that link's down type (at
    `info`, see link_recovery): "WAN connection restored" is the WAN's news.
    """
    for text in texts:
        link_text = _NOT_A_LINK_STATE.sub(" ", text)
        for alert_type, pattern in _TYPE_RULES:
            if pattern.search(link_text if alert_type in DOWN_TYPES else text):
                return alert_type
        recovered = _recovered_link(link_text)
        if recovered is not None:
            for alert_type, noun in _RECOVERED_TYPES:
                if noun.search(recovered):
                    return alert_type
    return None


def _recovered_link(text: str) -> str | None:
    """The link or tunnel `text` says came back, unless a down word comes before the recovery:
    "X re-established after being down" is a recovery, "X down; failover tunnel re-established"
    an outage that names its workaround."""
    found = _RECOVERY.search(text)
    if found is None or _DOWN_WORD.search(text, 0, found.start()):
        return None
    return str(found["link"] or found["named"])


def link_recovery(texts: Iterable[str]) -> bool:
    """True when one of `texts` says a link or tunnel itself came back (see DOWN_TYPES)."""
    return any(_recovered_link(_NOT_A_LINK_STATE.sub(" ", text)) for text in texts)


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
