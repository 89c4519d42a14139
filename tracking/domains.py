"""Recipient domains grouped the way receivers judge us: by registrable domain, and by mailbox provider.

Registrable domain ("eTLD+1"): the Public Suffix List is the reference, but bundling its ~10,000 rules (or
`tldextract`, which fetches it) is heavy for a grouping key. Recipient domains are overwhelmingly either a
provider's own domain (gmail.com, orange.fr) or a company's domain directly under a TLD. So: the last two
labels, except under the multi-label public suffixes that matter for a French sender (second-level
registries such as co.uk, com.au, gouv.fr, and the French sectoral suffixes from AFNIC's list), which take
three. A wrong split only merges or splits a group of subdomains; it never loses a count.

Mailbox provider: what a receiver's filtering policy follows is the MX, not the domain (a company on Google
Workspace is judged by Gmail's filters). `provider_of` maps well-known consumer domains directly and otherwise
looks at MX host names when the caller has them."""

from __future__ import annotations

# Multi-label public suffixes (a subset of the PSL's ICANN section): the registrable domain is one label more.
_MULTI_LABEL_SUFFIXES = frozenset({
    # France (AFNIC sectoral and public suffixes)
    "gouv.fr", "asso.fr", "nom.fr", "prd.fr", "tm.fr", "com.fr", "presse.fr", "avoues.fr", "cci.fr",
    "greta.fr", "huissier-justice.fr", "notaires.fr", "port.fr", "veterinaire.fr", "avocat.fr",
    # United Kingdom and other frequent second-level registries
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk", "sch.uk", "nhs.uk",
    "com.au", "net.au", "org.au", "edu.au", "gov.au", "co.nz", "org.nz", "co.za", "org.za",
    "co.jp", "ne.jp", "or.jp", "ac.jp", "com.br", "net.br", "org.br", "com.mx", "com.ar", "com.tr",
    "com.cn", "net.cn", "org.cn", "com.hk", "com.sg", "com.tw", "co.in", "co.il", "co.kr", "com.my",
    "com.ua", "com.pl", "com.es", "com.pt", "co.at", "or.at", "gv.at", "com.be", "com.gr", "com.ro",
    # Overseas France and francophone Africa registries
    "com.re", "com.gp", "com.mq", "co.ma", "net.ma", "org.ma", "com.tn", "com.dz", "com.sn", "co.ci",
})

# Provider of well-known mailbox domains (consumer webmail, French ISPs).
_DOMAIN_PROVIDER = {
    "gmail.com": "google", "googlemail.com": "google",
    "outlook.com": "microsoft", "outlook.fr": "microsoft", "hotmail.com": "microsoft", "hotmail.fr": "microsoft",
    "live.com": "microsoft", "live.fr": "microsoft", "msn.com": "microsoft",
    "yahoo.com": "yahoo", "yahoo.fr": "yahoo", "ymail.com": "yahoo", "aol.com": "yahoo", "aol.fr": "yahoo",
    "icloud.com": "apple", "me.com": "apple", "mac.com": "apple",
    "orange.fr": "orange", "wanadoo.fr": "orange",
    "free.fr": "free", "sfr.fr": "sfr", "neuf.fr": "sfr", "bbox.fr": "bouygues", "laposte.net": "laposte",
    "gmx.fr": "gmx", "gmx.com": "gmx", "gmx.de": "gmx", "web.de": "gmx",
    "protonmail.com": "proton", "proton.me": "proton",
}

# MX host suffix → provider (checked longest first): hosted domains follow their provider's filtering.
_MX_PROVIDER = (
    ("aspmx.l.google.com", "google"), ("googlemail.com", "google"), ("google.com", "google"),
    ("mail.protection.outlook.com", "microsoft"), ("outlook.com", "microsoft"), ("hotmail.com", "microsoft"),
    ("yahoodns.net", "yahoo"), ("mail.icloud.com", "apple"), ("orange.fr", "orange"), ("free.fr", "free"),
    ("sfr.fr", "sfr"), ("laposte.net", "laposte"), ("gmx.net", "gmx"), ("protonmail.ch", "proton"),
    ("ovh.net", "ovh"), ("mimecast.com", "mimecast"), ("pphosted.com", "proofpoint"),
)


def registrable_domain(domain: str) -> str:
    """`mail.example.co.uk` → `example.co.uk`; `news.example.fr` → `example.fr`; IDNs are kept as given."""
    d = domain.strip().strip(".").lower()
    labels = d.split(".")
    if len(labels) <= 2:
        return d
    if ".".join(labels[-2:]) in _MULTI_LABEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def provider_of(domain: str, mx_hosts: tuple[str, ...] = ()) -> str | None:
    """The mailbox provider of a recipient domain, or None when it is not one we know."""
    base = registrable_domain(domain)
    known = _DOMAIN_PROVIDER.get(base)
    if known:
        return known
    for host in mx_hosts:
        h = host.strip().rstrip(".").lower()
        for suffix, provider in _MX_PROVIDER:
            if h == suffix or h.endswith("." + suffix):
                return provider
    return None
