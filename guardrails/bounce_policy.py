"""Classification of one SMTP failure reply: basic code, enhanced status and text → failure class + reason.

Pure and shared: the dispatcher calls it on synchronous RCPT/DATA replies, the asynchronous bounce parser
(`tracking.bounces`) calls it on the `Status` / `Diagnostic-Code` of a DSN or on the text of a
non-standard bounce. The class decides what the contract's 3-failure rule may count against the recipient.

Order of evidence (STANDARDS.md §2):
1. phrases that name the cause without ambiguity whatever the code says (a blocklist citation, "mailbox
   full", a rate limit): servers often attach a generic or wrong code to them (e.g. 550 5.1.1 used by some
   providers for a quota, 5.2.2 being permanent on the wire but transient by RFC 3463 §3.3's own note);
2. a specific RFC 3463 enhanced status (x.1.1, x.2.2, x.7.1 …);
3. phrases that a generic code (x.0.0, none) leaves to the text ("user unknown", "host not found" …);
4. the basic code's class (4xx soft, 5xx soft with an unknown cause: we never call a failure hard without
   evidence that the address itself is bad).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class FailureClass(StrEnum):
    HARD = "hard"  # the address is permanently undeliverable
    SOFT = "soft"  # transient or recipient-side but not about the address's existence
    POLICY = "policy"  # a block aimed at our sender, IP or content (x.7.x, blocklists)
    RATE_LIMIT = "rate_limit"  # the receiver throttles us (Gmail 4.7.28, "too many connections")


class Reason(StrEnum):
    USER_UNKNOWN = "user_unknown"
    DOMAIN_NOT_FOUND = "domain_not_found"
    NULL_MX = "null_mx"
    MAILBOX_MOVED = "mailbox_moved"
    BAD_ADDRESS_SYNTAX = "bad_address_syntax"
    MAILBOX_FULL = "mailbox_full"
    MAILBOX_DISABLED = "mailbox_disabled"
    MESSAGE_TOO_LARGE = "message_too_large"
    SPAM_BLOCK = "spam_block"
    BLOCKLISTED = "blocklisted"
    AUTH_FAILURE = "auth_failure"
    CONTENT_REJECTED = "content_rejected"
    POLICY_BLOCK = "policy_block"
    RELAY_DENIED = "relay_denied"
    RATE_LIMITED = "rate_limited"
    RETRIES_EXPIRED = "retries_expired"
    NETWORK_ERROR = "network_error"
    SYSTEM_ERROR = "system_error"
    UNKNOWN = "unknown"


_HARD_REASONS = frozenset(
    {Reason.USER_UNKNOWN, Reason.DOMAIN_NOT_FOUND, Reason.NULL_MX, Reason.MAILBOX_MOVED, Reason.BAD_ADDRESS_SYNTAX}
)
_POLICY_REASONS = frozenset(
    {
        Reason.SPAM_BLOCK,
        Reason.BLOCKLISTED,
        Reason.AUTH_FAILURE,
        Reason.CONTENT_REJECTED,
        Reason.POLICY_BLOCK,
        Reason.RELAY_DENIED,
    }
)


@dataclass(frozen=True, slots=True)
class ReplyClass:
    failure_class: FailureClass
    reason: Reason
    permanent: bool  # the reply itself said "do not retry" (5xx / 5.x.x)

    @property
    def counts_against_recipient(self) -> bool:
        """Whether the contract's 3-failure rule may count this failure against the address.

        Hard yes; a policy block or a rate limit is about *us*, never the recipient (STANDARDS §2);
        a soft failure only once retries are exhausted (then reason is RETRIES_EXPIRED or the final reply).
        """
        if self.failure_class is FailureClass.HARD:
            return True
        if self.failure_class is FailureClass.SOFT:
            return self.reason is Reason.RETRIES_EXPIRED or self.permanent
        return False


_ENHANCED_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


# Tier 1: phrases that override any code.
_SENDER_SIDE = _rx(
    r"sender address rejected", r"sender (?:domain|address) (?:must|is not|does not|doesn't|not)",
    r"bad (?:outbound )?sender", r"domain of sender address", r"sender (?:is )?(?:blocked|denied|rejected)",
)
_BLOCKLIST = _rx(
    r"spamhaus", r"spamcop", r"barracuda", r"sorbs\.net", r"\bsurbl\b", r"uribl", r"\bdnsbl\b", r"\brbl\b",
    r"black[- ]?list", r"block[- ]?list", r"blocked using", r"(?<!not )listed (?:at|in|on|by)\b", r"\bbl\.\w",
    r"abuseat\.org", r"\bcbl\b", r"\bips?\b.{0,40}\b(?:is|are|was|has been)\s+(?:block|blacklist|list)",
    r"poor reputation", r"bad reputation", r"low reputation", r"reputation (?:of|is|too)",
)
# A hedge is not a citation: cPanel's Exim says "The account or domain may not exist, they may be blacklisted,
# or missing the proper dns entries" for every routing failure; only an asserted listing is a blocklist.
_HEDGED_LISTING = _rx(r"(?:may|might|could) (?:also )?(?:be|have been) (?:black|block)[- ]?listed")
_RATE = _rx(
    r"rate[- ]?limit", r"too many (?:messages|mails|emails|connections|recipients from|concurrent|sessions)",
    r"try again later.{0,40}(?:rate|volume|too many)", r"unusual rate",
    r"exceeded.{0,30}(?:rate|per (?:hour|day|minute))", r"throttl", r"temporarily deferred due to",
    r"\bRP-00[0-9]\b", r"\bTS0[1-4]\b", r"sending quota", r"connection rate", r"message rate", r"too much mail",
    r"high volume",
)
_MAILBOX_FULL = _rx(
    r"mail ?box (?:is )?(?:full|over ?quota|exceeded|size limit)", r"mailbox_full", r"over ?quota",
    r"quota (?:exceeded|exceed|full|violation)", r"exceeded (?:his|her|their|the)? ?(?:storage|quota)",
    r"disk quota", r"insufficient (?:disk )?space", r"user.{0,20}is full", r"out of storage", r"mailfolder is full",
    r"exceeds? (?:the )?(?:mailbox|storage|size) (?:quota|limit)", r"box full", r"not enough (?:storage|space)",
    r"account is full", r"inbox is full", r"storage (?:quota|limit|full)", r"mailbox has exceeded",
    r"too many messages in (?:this|the) mailbox", r"full mailbox",
    r"(?<!sending )(?<!daily )(?<!hourly )(?<!send )(?<!rate )\bquota\b", r"space not enough",
    r"postfach (?:ist )?voll", r"bo[iî]te (?:aux lettres |mail )?(?:est )?pleine", r"buz[oó]n lleno",
    r"dis[ck] quota", r"no space left on device", r"(?:does not|doesn't) have enough space",
    r"exceeded storage allocation", r"space has been used up", r"too much mail data",
    r"too many messages on the server", r"would exceed (?:the )?maximum allowed storage", r"mail file size exceeds",
)
# Tier 2 helpers and tier 3 phrases.
_USER_UNKNOWN = _rx(
    r"user(?:name)? (?:is )?unknown", r"unknown (?:user|recipient|mailbox|local[- ]?part|address|account)",
    r"no such (?:user|recipient|mailbox|account|address|person|local user)", r"user not found",
    r"recipient not found", r"mailbox not found", r"address not found", r"account not found",
    r"(?:user|mailbox|recipient|address|account|addressee|e-?mail address)(?: \S+)? (?:does not|doesn't|doesnt) exist",
    r"does not exist", r"invalid (?:recipient|mailbox|user|address|e-?mail address)",
    r"not a valid (?:user|mailbox|recipient)", r"mailbox unavailable",
    r"mailbox (?:is )?(?:not available|unavailable|invalid)",
    r"recipient address rejected: (?:access denied|user unknown|undeliverable)", r"bad destination mailbox",
    r"user (?:account )?(?:doesn't|does not) have", r"not (?:our|a local) customer", r"no mailbox",
    r"address (?:is )?(?:unknown|invalid)", r"unknown or illegal alias", r"no such local",
    r"not listed in domino directory", r"recipient (?:is )?(?:unknown|invalid)", r"unrouteable address",
    r"mailbox (?:name )?(?:not allowed|not exist)", r"(?:user|recipient) (?:is )?not (?:known|exist|here|local)",
    r"has no (?:mailbox|account)", r"nosuchuser", r"undeliverable address",
    r"does not have an? (?:e-?mail|mailbox|account)", r"address lookup failed", r"no valid recipients",
    r"email account that you tried to reach does not exist",
    r"not found in (?:the )?(?:directory|ldap|user ?database|address book)", r"user invalid",
    r"recipnotfound", r"recipientnotfound", r"not found by smtp address lookup",
    r"(?:address|recipient|mailbox|user)[^.\n]{0,40}(?:couldn't|could not|can't|cannot) be found",
    r"(?:wasn't|was not) found at", r"not found in the recipient's e-?mail system", r"no such address",
    r"can't accept mail for", r"can(?:'t|not) find the user", r"destination addresses? (?:were|was|is) unknown",
    r"is not a (?:known|valid) (?:user|mailbox|recipient)", r"mailbox not present", r"no account by that name",
    r"no mail ?box available", r"invalid or unknown virtual user", r"was not found in ldap",
    r"unknown e-?mail address", r"user missing home directory", r"account or domain may not exist",
    r"addressee unknown",
    r"did not (?:exactly )?match (?:an?|any) (?:\w+ )?(?:e-?mail )?address",
    r"invalid (?:final )?(?:delivery )?user ?id", r"not a (?:valid |registered |known )(?:\w+ )?user",
    r"does not have a final (?:e-?mail )?delivery point", r"n'existe pas", r"\binconnu", r"unbekannt",
    r"existiert nicht", r"gibt es nicht", r"no existe", r"non esiste", r"sconosciut", r"inesistente", r"onbekend",
    r"bestaat niet", r"desconocid",
)
_DOMAIN = _rx(
    r"domain must exist", r"name or service not known", r"unroutable address",
    r"mx records? points? to non-?existent hosts?", r"couldn't find any host", r"could not find any host",
    r"couldn't find a mail exchanger", r"no mail exchanger", r"non-?existent (?:domain|host)",
    r"host (?:or domain name )?not found", r"domain (?:name )?not found", r"name service error", r"host unknown",
    r"unknown host", r"no such domain", r"domain (?:does not|doesn't) exist", r"nxdomain", r"unknown domain",
    r"no mx (?:or a )?record", r"unrouteable (?:mail )?domain", r"domain is not (?:valid|configured)",
    r"invalid domain", r"unable to route", r"no route to host found", r"bad destination system",
    r"domain (?:name )?(?:is )?(?:invalid|unknown)", r"hostname (?:not found|could not be resolved)",
    r"unknown mail domain", r"dns (?:lookup )?(?:failed|error).{0,40}domain",
)
_NULL_MX = _rx(r"null ?mx", r"(?:does not|doesn't) accept (?:e-?)?mail", r"domain does not receive")
_MOVED = _rx(r"user not local; please try", r"has been replaced by",
    r"has moved", r"mailbox moved", r"address changed", r"no longer (?:available|valid|in use|at)", r"moved to",
    r"is not longer",
)
_DISABLED = _rx(
    r"no longer accepts mail", r"user suspended", r"is a deactivated mailbox",
    r"disabled", r"deactivated", r"inactive", r"suspended",
    r"account (?:has been |is )?(?:closed|locked|blocked|expired)", r"mailbox (?:is )?(?:locked|closed|frozen)",
    r"not accepting (?:any )?(?:mail|messages)", r"on hold", r"account expired", r"is unavailable",
    r"temporarily unavailable", r"discontinued", r"dormant",
)
_SPAM = _rx(r"\bspam", r"junk", r"unsolicited", r"bulk mail", r"phish", r"suspicious", r"scam", r"\buce\b")
_CONTENT = _rx(
    r"virus", r"malware", r"content (?:rejected|filter|policy)", r"attachment", r"message content",
    r"banned (?:attachment|file|content)", r"prohibited", r"infected", r"forbidden",
)
_AUTH = _rx(
    r"\bspf\b", r"\bdkim\b", r"\bdmarc\b", r"authenticat", r"reverse dns", r"\bptr\b", r"rdns", r"sender verif",
    r"not authorized to send", r"sender policy framework",
)
_RELAY = _rx(
    r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited)", r"not permitted to relay",
    r"we do not relay", r"no relaying", r"unable to relay", r"relay not",
)
_TOO_BIG = _rx(
    r"message (?:size|is too (?:big|large)|too (?:big|large))", r"exceeds? (?:the )?(?:maximum|size)", r"too large",
    r"message length exceeds",
)
_EXPIRED = _rx(
    r"retry (?:time(?:out)?|timeout) (?:exceeded|expired)", r"delivery time expired", r"too long in (?:the )?queue",
    r"could not be delivered for \d+ ", r"giving up", r"message expired", r"time limit exceeded",
    r"expired.{0,20}(?:queue|deliver)", r"has been delayed for", r"retry timeout",
    r"unable to deliver.{0,40}(?:days|hours)",
    # Exim, once a host has failed past its retry rule's cutoff: new messages are returned at once.
    r"retry time not reached for any host", r"long failure period", r"have been failing for a long time",
)
_NETWORK = _rx(r"loops? back to myself", r"mail forwarding loop", r"routing loop", r"too many hops",
    r"connection (?:refused|timed out|reset)", r"timed? ?out", r"network", r"lost connection", r"no route to host",
    r"unreachable", r"connect to",
)
_POLICY_WORDS = _rx(r"\bpolicy", r"\brefused\b", r"\bblocked\b", r"\bdenied\b", r"not allowed", r"rejected for")

# RFC 3463 subject.detail → reason, for the specific codes; anything else falls through to the text.
_BY_STATUS: dict[tuple[int, int], Reason] = {
    (1, 0): Reason.USER_UNKNOWN,  # "other address status": in practice a rejected recipient address
    (1, 1): Reason.USER_UNKNOWN,
    (1, 2): Reason.DOMAIN_NOT_FOUND,
    (1, 3): Reason.BAD_ADDRESS_SYNTAX,
    (1, 6): Reason.MAILBOX_MOVED,
    (1, 7): Reason.POLICY_BLOCK,  # bad *sender* mailbox address syntax
    (1, 8): Reason.POLICY_BLOCK,  # bad *sender* system address
    (1, 10): Reason.NULL_MX,  # RFC 7505 §4.1
    (2, 1): Reason.MAILBOX_DISABLED,
    (2, 2): Reason.MAILBOX_FULL,  # RFC 3463: treat as transient even with class 5
    (2, 3): Reason.MESSAGE_TOO_LARGE,
    (3, 4): Reason.MESSAGE_TOO_LARGE,
    (4, 4): Reason.DOMAIN_NOT_FOUND,  # unable to route: no MX/A for the domain
    (4, 6): Reason.NETWORK_ERROR,  # routing loop
    (4, 7): Reason.RETRIES_EXPIRED,  # delivery time expired
    (7, 23): Reason.AUTH_FAILURE,
    (7, 25): Reason.AUTH_FAILURE,
    (7, 26): Reason.AUTH_FAILURE,
    (7, 27): Reason.AUTH_FAILURE,
    (7, 28): Reason.RATE_LIMITED,  # Gmail 421 4.7.28 / 550 5.7.28
    (7, 29): Reason.AUTH_FAILURE,
    (7, 30): Reason.AUTH_FAILURE,
    (7, 31): Reason.AUTH_FAILURE,
    (7, 32): Reason.AUTH_FAILURE,
}


def parse_enhanced(value: str | None) -> tuple[int, int, int] | None:
    """'5.1.1' (or a text containing one) → (5, 1, 1); None when absent or malformed."""
    if not value:
        return None
    m = _ENHANCED_RE.search(value)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def _reason_from_text_generic(text: str) -> Reason | None:
    """Tier 3: the causes a generic code leaves to the words (order: most specific first)."""
    if _NULL_MX.search(text):
        return Reason.NULL_MX
    if _DOMAIN.search(text):
        return Reason.DOMAIN_NOT_FOUND
    if _USER_UNKNOWN.search(text):
        return Reason.USER_UNKNOWN
    if _RELAY.search(text):
        return Reason.RELAY_DENIED
    if _MOVED.search(text):
        return Reason.MAILBOX_MOVED
    if _DISABLED.search(text):
        return Reason.MAILBOX_DISABLED
    if _AUTH.search(text):
        return Reason.AUTH_FAILURE
    if _SPAM.search(text):
        return Reason.SPAM_BLOCK
    if _CONTENT.search(text):
        return Reason.CONTENT_REJECTED
    if _TOO_BIG.search(text):
        return Reason.MESSAGE_TOO_LARGE
    if _EXPIRED.search(text):
        return Reason.RETRIES_EXPIRED
    if _NETWORK.search(text):
        return Reason.NETWORK_ERROR
    if _POLICY_WORDS.search(text):
        return Reason.POLICY_BLOCK
    return None


def _policy_reason(text: str) -> Reason:
    """A x.7.x reply: which kind of block aimed at us."""
    if _AUTH.search(text):
        return Reason.AUTH_FAILURE
    if _SPAM.search(text):
        return Reason.SPAM_BLOCK
    if _CONTENT.search(text):
        return Reason.CONTENT_REJECTED
    if _RELAY.search(text):
        return Reason.RELAY_DENIED
    return Reason.POLICY_BLOCK


def reason_for(code: int | None, enhanced: str | None, text: str) -> Reason:
    """The reason alone (see the module docstring for the order of evidence)."""
    text = text or ""
    status = parse_enhanced(enhanced) or parse_enhanced(text)
    # Tier 1.
    if _BLOCKLIST.search(_HEDGED_LISTING.sub(" ", text)):
        return Reason.BLOCKLISTED
    if _SENDER_SIDE.search(text):
        # "5.1.0 Sender address rejected: Domain not found" names *our* domain, never the recipient's.
        return Reason.AUTH_FAILURE if _AUTH.search(text) else Reason.POLICY_BLOCK
    if _MAILBOX_FULL.search(text):
        return Reason.MAILBOX_FULL
    if _RATE.search(text):
        return Reason.RATE_LIMITED
    # Tier 2.
    if status is not None:
        _, subject, detail = status
        if subject == 1 and detail == 10 and _USER_UNKNOWN.search(text):
            return Reason.USER_UNKNOWN  # Exchange Online reuses 5.1.10 for "RecipientNotFound"
        if subject == 1 and detail in (0, 1, 4, 5):
            # x.1.0 "other address status" and friends: the words say whether it is the user or the domain.
            # A disabled mailbox named in words stays soft (issue 4) even under a sloppy x.1.1.
            generic = _reason_from_text_generic(text)
            if generic in (Reason.DOMAIN_NOT_FOUND, Reason.NULL_MX, Reason.MAILBOX_MOVED, Reason.MAILBOX_DISABLED):
                return generic
            if detail == 1:
                return Reason.USER_UNKNOWN
            return generic if generic is not None else Reason.USER_UNKNOWN
        known = _BY_STATUS.get((subject, detail))
        if known is not None:
            return known
        if subject == 7:
            # Some receivers answer x.7.1 for an unknown user ("550 5.7.1 recipient unknown"): the words win.
            if _USER_UNKNOWN.search(text) and not _POLICY_WORDS.search(text):
                return Reason.USER_UNKNOWN
            return _policy_reason(text)
    # Tier 3.
    generic = _reason_from_text_generic(text)
    if generic is not None:
        return generic
    if status is not None:
        subject = status[1]
        if subject == 4:
            return Reason.NETWORK_ERROR
        if subject == 3:
            return Reason.SYSTEM_ERROR
    return Reason.UNKNOWN


def class_of(reason: Reason) -> FailureClass:
    if reason in _HARD_REASONS:
        return FailureClass.HARD
    if reason in _POLICY_REASONS:
        return FailureClass.POLICY
    if reason is Reason.RATE_LIMITED:
        return FailureClass.RATE_LIMIT
    return FailureClass.SOFT


def _is_permanent(code: int | None, status: tuple[int, int, int] | None) -> bool:
    if status is not None:
        return status[0] == 5
    return code is not None and 500 <= code < 600


def classify_reply(code: int | None, enhanced: str | None, text: str) -> ReplyClass:
    """Classify one SMTP failure reply (or a DSN's Status + Diagnostic-Code).

    A transient reply (4xx / 4.x.x) is never hard: the address may exist, only the receiver said "later".
    """
    status = parse_enhanced(enhanced) or parse_enhanced(text or "")
    permanent = _is_permanent(code, status)
    reason = reason_for(code, enhanced, text or "")
    klass = class_of(reason)
    if klass is FailureClass.HARD and not permanent and (status is not None or code is not None):
        klass = FailureClass.SOFT
    return ReplyClass(failure_class=klass, reason=reason, permanent=permanent)
