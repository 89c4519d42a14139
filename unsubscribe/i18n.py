"""The page's two languages: French (the default: the platform's recipients are mostly French) and English.

The language comes from `?lang=` (the switch: a plain link, no cookie) or else from `Accept-Language`
(RFC 9110 §12.5.4, with q-values)."""

from __future__ import annotations

SUPPORTED = ("fr", "en")
DEFAULT = "fr"

TEXT: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Se désinscrire",
        "switch_label": "Langue",
        "intro": "Vous recevez ces e-mails de la part de",
        "address": "Adresse concernée :",
        "legend": "De quoi voulez-vous vous désinscrire ?",
        "scope_account": "De tous les e-mails marketing de {sender}",
        "scope_list": "De cette liste seulement\u00a0: «\u00a0{list}\u00a0»",
        "scope_all": "De tous les messages marketing de {sender}, e-mails et SMS",
        "button": "Me désinscrire",
        "note": "Les messages liés à vos commandes ou à votre compte (factures, livraisons) ne sont pas concernés.",
        "done_title": "Désinscription confirmée",
        "done_account": "Vous ne recevrez plus d'e-mails marketing de {sender}.",
        "done_list": "Vous ne recevrez plus les e-mails de la liste «\u00a0{list}\u00a0» de {sender}.",
        "done_all": "Vous ne recevrez plus de messages marketing de {sender}, ni par e-mail ni par SMS.",
        "already": "Vous étiez déjà désinscrit : rien n'a changé.",
        "undo_hint": "C'était une erreur ?",
        "undo_button": "Annuler ma désinscription",
        "undone_title": "Désinscription annulée",
        "undone": "C'est noté : vous recevrez de nouveau les e-mails de {sender}.",
        "undo_gone": "Cette désinscription ne peut plus être annulée.",
        "invalid_title": "Lien non valide",
        "invalid": "Ce lien de désinscription n'est pas valide ou a expiré. Vous pouvez répondre à l'e-mail "
                   "reçu pour demander votre désinscription.",
        "unavailable": "Le service est momentanément indisponible. Merci de réessayer dans une minute.",
        "sender_label": "Expéditeur",
        "optin_title": "Confirmer mon inscription",
        "optin_ask": "Confirmez-vous vouloir recevoir les e-mails de {sender} ?",
        "optin_button": "Je confirme",
        "optin_done": "Merci : votre inscription aux e-mails de {sender} est confirmée.",
        "optin_already": "Votre inscription était déjà confirmée.",
    },
    "en": {
        "title": "Unsubscribe",
        "switch_label": "Language",
        "intro": "You receive these emails from",
        "address": "Address:",
        "legend": "What do you want to unsubscribe from?",
        "scope_account": "All marketing emails from {sender}",
        "scope_list": "This list only: “{list}”",
        "scope_all": "All marketing messages from {sender}, emails and text messages",
        "button": "Unsubscribe",
        "note": "Messages about your orders or your account (invoices, deliveries) are not affected.",
        "done_title": "You are unsubscribed",
        "done_account": "You will receive no more marketing emails from {sender}.",
        "done_list": "You will receive no more emails of the “{list}” list from {sender}.",
        "done_all": "You will receive no more marketing messages from {sender}, by email or text message.",
        "already": "You were already unsubscribed: nothing changed.",
        "undo_hint": "Was it a mistake?",
        "undo_button": "Undo and resubscribe",
        "undone_title": "Unsubscribe undone",
        "undone": "Done: you will receive emails from {sender} again.",
        "undo_gone": "This unsubscribe can no longer be undone.",
        "invalid_title": "Invalid link",
        "invalid": "This unsubscribe link is not valid or has expired. You can reply to the email you received "
                   "to ask to be unsubscribed.",
        "unavailable": "The service is briefly unavailable. Please try again in a minute.",
        "sender_label": "Sender",
        "optin_title": "Confirm my subscription",
        "optin_ask": "Do you confirm you want to receive emails from {sender}?",
        "optin_button": "I confirm",
        "optin_done": "Thank you: your subscription to emails from {sender} is confirmed.",
        "optin_already": "Your subscription was already confirmed.",
    },
}

LANGUAGE_NAMES = {"fr": "Français", "en": "English"}


def pick_language(explicit: str | None, accept_language: str) -> str:
    if explicit in SUPPORTED:
        return explicit
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if q > 0 and primary in SUPPORTED:
            ranked.append((-q, position, primary))
    return min(ranked)[2] if ranked else DEFAULT


def mask(address: str) -> str:
    """`j***@example.com`: enough for the recipient to recognise the address, little for a forwarded link."""
    local, at, domain = address.partition("@")
    if not at:
        return address[:3] + "***" if len(address) > 3 else "***"
    return f"{local[:1]}***@{domain}"
