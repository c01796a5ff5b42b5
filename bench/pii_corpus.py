"""The labelled PII corpus of ``pii_accuracy``: faker values in sentences, plus hard negatives.

Deterministic for a seed. Each ``Doc`` is a short message (one to four sentences, or a log
line) in the language of one faker locale, with the exact character spans of the personal data
it embeds (``gold``). Positives come from faker's own providers in that locale: ``email``,
``phone_number`` (every format faker has for the locale, as generated), ``iban``, card numbers
(faker's issuer types, weighted by a rough share of cards in use, printed bare, in groups of
four or with dashes), ``ssn`` (en_US), ``ipv4``/``ipv4_private``/``ipv6``, and API keys in the
published shapes of the providers the detectors know (random bodies). Hard negatives are
things a support chat or a log line is full of and that share a shape with some entity: order
and invoice numbers, Amazon-style order ids, UUIDs, ISO/epoch/locale timestamps and dates,
version strings (including four-part builds), hashes and git SHAs, parcel tracking numbers (UPS,
FedEx, USPS), ISBNs and EAN barcodes, postcodes and street addresses, amounts and percentages,
MAC addresses, clock times, coordinates and BIC codes. A negative carries no gold span: any
detection on it is a false positive.

Needs ``faker`` (``pip install -r bench/requirements-pii.txt``). Run by hand, not in the tests.
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field

from faker import Faker

LOCALES = (
    "en_US",
    "en_GB",
    "de_DE",
    "fr_FR",
    "it_IT",
    "es_ES",
    "nl_NL",
    "pt_PT",
    "de_AT",
    "pl_PL",
)
ENTITIES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "API_KEY")

#: Faker card type → weight (a rough share of cards in use; every type faker has appears).
CARD_TYPES = {
    "visa16": 40,
    "mastercard": 30,
    "amex": 8,
    "discover": 4,
    "maestro": 5,
    "jcb16": 3,
    "diners": 2,
    "visa13": 2,
    "visa19": 3,
    "jcb15": 1,
}


@dataclass
class Doc:
    text: str
    locale: str
    gold: list[tuple[int, int, str]] = field(default_factory=list)


# --- sentence templates per language: ``{}`` is where the value goes ---------------------------

T: dict[str, dict[str, list[str]]] = {
    "en": {
        "EMAIL": [
            "Please reply to {} when you have a moment.",
            "My email is {}",
            "cc: {}",
            "You can reach our billing team at {}.",
            "Contact ({}) for details",
        ],
        "PHONE": [
            "Call me on {} after 5pm.",
            "Phone: {}",
            "My number is {}, text first please.",
            "Reach the front desk at {}.",
            "tel {} / ext. reception",
            "{} is the hotline.",
            "Contact: {}",
            "{} (office, weekdays)",
        ],
        "CREDIT_CARD": [
            "Charge it to my card {} please.",
            "Card number: {}",
            "I paid with {} exp 09/27.",
            "The card ending in the digits of {} was declined.",
        ],
        "IBAN": [
            "Wire the refund to {}.",
            "IBAN: {}",
            "Our account is {} (Barclays).",
        ],
        "US_SSN": [
            "My SSN is {}.",
            "social security number {} on the form",
            "SSN: {}",
            "Applicant {} needs a callback.",
        ],
        "IP_ADDRESS": [
            "The request came from {}.",
            "client_ip={} status=403",
            "Whitelist {} in the firewall.",
            "Server {} stopped answering pings.",
        ],
        "API_KEY": [
            "Here is my key: {}",
            "export OPENAI_API_KEY={}",
            'token = "{}"',
            "The build fails with {} in the env.",
        ],
        "NEG": [
            "Order {} has shipped.",
            "See ticket {} for context.",
            "Reference: {}",
            "It happened at {} according to the logs.",
            "We upgraded to {} last week.",
            "Tracking number {}",
            "The value was {} in the report.",
            "{} is what the system shows.",
        ],
    },
    "de": {
        "EMAIL": ["Schreiben Sie mir an {}.", "E-Mail: {}", "Bitte Antwort an {} senden."],
        "PHONE": [
            "Rufen Sie mich unter {} an.",
            "Tel.: {}",
            "Meine Handynummer ist {}.",
            "Erreichbar unter {} (werktags).",
            "Kontakt: {}",
        ],
        "CREDIT_CARD": ["Bitte buchen Sie von meiner Karte {} ab.", "Kreditkarte: {}"],
        "IBAN": ["Bitte überweisen Sie auf {}.", "IBAN: {}", "Kontoverbindung {} (Sparkasse)"],
        "IP_ADDRESS": ["Die Anfrage kam von {}.", "Server {} antwortet nicht."],
        "API_KEY": ["Mein Schlüssel lautet {}", "export API_KEY={}"],
        "NEG": [
            "Bestellung {} wurde versandt.",
            "Rechnungsnummer: {}",
            "Das Ticket {} ist noch offen.",
            "Stand: {}",
            "Sendungsnummer {}",
            "Wir nutzen Version {}.",
        ],
    },
    "fr": {
        "EMAIL": ["Écrivez-moi à {}.", "Courriel : {}", "Merci de répondre à {}."],
        "PHONE": [
            "Appelez-moi au {}.",
            "Tél. : {}",
            "Mon portable est le {}.",
            "Joignable au {} en semaine.",
            "Contact : {}",
        ],
        "CREDIT_CARD": ["Débitez ma carte {} s'il vous plaît.", "Carte bancaire : {}"],
        "IBAN": ["Virement sur le compte {}.", "IBAN : {}", "RIB : {}"],
        "IP_ADDRESS": ["La requête venait de {}.", "Le serveur {} ne répond plus."],
        "API_KEY": ["Voici ma clé : {}", "export API_KEY={}"],
        "NEG": [
            "La commande {} est partie.",
            "Facture n° {}",
            "Le dossier {} est en cours.",
            "Mis à jour le {}",
            "Numéro de suivi {}",
            "Nous utilisons la version {}.",
        ],
    },
    "it": {
        "EMAIL": ["Scrivimi a {}.", "Email: {}"],
        "PHONE": ["Chiamami al {}.", "Tel. {}", "Il mio cellulare è {}.", "Contatto: {}"],
        "CREDIT_CARD": ["Addebita sulla carta {} per favore.", "Carta di credito: {}"],
        "IBAN": ["Effettua il bonifico su {}.", "IBAN: {}"],
        "IP_ADDRESS": ["La richiesta arrivava da {}.", "Il server {} non risponde."],
        "API_KEY": ["Ecco la mia chiave: {}"],
        "NEG": [
            "L'ordine {} è stato spedito.",
            "Fattura n. {}",
            "Aggiornato il {}",
            "Codice di tracciamento {}",
            "Versione {}",
        ],
    },
    "es": {
        "EMAIL": ["Escríbeme a {}.", "Correo: {}"],
        "PHONE": ["Llámame al {}.", "Tel.: {}", "Mi móvil es el {}.", "Contacto: {}"],
        "CREDIT_CARD": ["Cárgalo a mi tarjeta {} por favor.", "Tarjeta: {}"],
        "IBAN": ["Haz la transferencia a {}.", "IBAN: {}"],
        "IP_ADDRESS": ["La petición llegó desde {}.", "El servidor {} no responde."],
        "API_KEY": ["Esta es mi clave: {}"],
        "NEG": [
            "El pedido {} ya salió.",
            "Factura n.º {}",
            "Actualizado el {}",
            "Número de seguimiento {}",
            "Versión {}",
        ],
    },
    "nl": {
        "EMAIL": ["Mail me op {}.", "E-mail: {}"],
        "PHONE": ["Bel me op {}.", "Tel.: {}", "Mijn mobiele nummer is {}."],
        "CREDIT_CARD": ["Schrijf het af van mijn kaart {} alstublieft.", "Creditcard: {}"],
        "IBAN": ["Maak het over naar {}.", "IBAN: {}", "Rekeningnummer {}"],
        "IP_ADDRESS": ["Het verzoek kwam van {}.", "Server {} reageert niet."],
        "API_KEY": ["Hier is mijn sleutel: {}"],
        "NEG": [
            "Bestelling {} is verzonden.",
            "Factuurnummer {}",
            "Bijgewerkt op {}",
            "Track-and-trace {}",
            "Versie {}",
        ],
    },
    "pt": {
        "EMAIL": ["Escreva para {}.", "E-mail: {}"],
        "PHONE": ["Ligue-me para o {}.", "Tel.: {}", "O meu telemóvel é {}."],
        "CREDIT_CARD": ["Debite no meu cartão {} por favor.", "Cartão: {}"],
        "IBAN": ["Faça a transferência para {}.", "IBAN: {}"],
        "IP_ADDRESS": ["O pedido veio de {}."],
        "API_KEY": ["Aqui está a minha chave: {}"],
        "NEG": ["A encomenda {} foi enviada.", "Fatura n.º {}", "Atualizado em {}", "Versão {}"],
    },
    "pl": {
        "EMAIL": ["Napisz do mnie na {}.", "E-mail: {}"],
        "PHONE": ["Zadzwoń pod {}.", "Tel.: {}", "Mój numer komórki to {}."],
        "CREDIT_CARD": ["Obciąż moją kartę {} proszę.", "Karta: {}"],
        "IBAN": ["Przelej na {}.", "IBAN: {}"],
        "IP_ADDRESS": ["Żądanie przyszło z {}."],
        "API_KEY": ["Oto mój klucz: {}"],
        "NEG": ["Zamówienie {} zostało wysłane.", "Faktura nr {}", "Zaktualizowano {}"],
    },
}


# --- values -------------------------------------------------------------------------------------


_CARDS = Faker("en_US")  # faker's card types are those of its default provider


def _card(rng: random.Random) -> str:
    kind = rng.choices(list(CARD_TYPES), weights=list(CARD_TYPES.values()))[0]
    _CARDS.seed_instance(rng.randrange(2**32))
    digits = str(_CARDS.credit_card_number(kind))
    style = rng.random()
    if style < 0.4:
        return str(digits)
    sep = " " if style < 0.8 else "-"
    if len(digits) == 15 and digits[:2] in ("34", "37"):
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return sep.join(groups)


def _iban(f: Faker, rng: random.Random) -> str:
    iban = str(f.iban())
    if rng.random() < 0.5:  # the printed (paper) format: groups of four
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _api_key(rng: random.Random) -> str:
    upper = string.ascii_uppercase + string.digits
    kind = rng.randrange(7)
    if kind == 0:
        return "sk-proj-" + _alnum(rng, 48, string.ascii_letters + string.digits + "_-")
    if kind == 1:
        return "sk-" + _alnum(rng, 20) + "T3BlbkFJ" + _alnum(rng, 20)
    if kind == 2:
        return "sk-ant-api03-" + _alnum(rng, 93, string.ascii_letters + string.digits + "_-") + "AA"
    if kind == 3:
        return rng.choice(("AKIA", "ASIA")) + _alnum(rng, 16, upper)
    if kind == 4:
        return rng.choice(("ghp_", "gho_", "ghs_")) + _alnum(rng, 36)
    if kind == 5:
        return "AIza" + _alnum(rng, 35, string.ascii_letters + string.digits + "_-")
    return f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-" + _alnum(
        rng, 24
    )


def _ip(f: Faker, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return str(f.ipv4_public())
    if r < 0.75:
        return str(f.ipv4_private())
    return str(f.ipv6())


def _ean13(rng: random.Random) -> str:
    body = [rng.randrange(10) for _ in range(12)]
    body[0] = rng.choice((4, 5, 7, 8, 9))  # EAN country prefixes common in Europe
    check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    return "".join(map(str, body)) + str(check)


def _negative(f: Faker, rng: random.Random) -> str:
    year = rng.randrange(2015, 2027)
    k = rng.randrange(30)
    if k == 0:
        return f"#{rng.randrange(10**7, 10**10)}"
    if k == 1:
        return f"ORD-{year}-{rng.randrange(10**5, 10**6):06d}"
    if k == 2:
        a, b, c = rng.randrange(100, 1000), rng.randrange(10**6, 10**7), rng.randrange(10**6, 10**7)
        return f"{a}-{b}-{c}"  # Amazon-style order id
    if k == 3:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if k == 4:
        return f.iso8601() + rng.choice(("Z", "+00:00", ".123Z", ""))
    if k == 5:
        return f.date(pattern=rng.choice(("%d.%m.%Y", "%m/%d/%Y", "%Y-%m-%d", "%d/%m/%Y %H:%M")))
    if k == 6:
        return str(rng.randrange(1_400_000_000, 1_800_000_000) * rng.choice((1, 1000)))
    if k == 7:
        return f"v{rng.randrange(0, 20)}.{rng.randrange(0, 40)}.{rng.randrange(0, 200)}"
    if k == 8:
        return f"10.0.{rng.randrange(10000, 26100)}.{rng.randrange(1, 6000)}"
    if k == 9:
        return rng.choice((f.sha256(), f.sha1(), f.md5(), f.sha1()[:7], f.sha1()[:12]))
    if k == 10:
        return (
            "1Z"
            + _alnum(rng, 6, string.ascii_uppercase + string.digits)
            + "".join(rng.choice(string.digits) for _ in range(10))
        )
    if k == 11:
        return str(rng.randrange(10**11, 10**12))  # FedEx
    if k == 12:
        usps = "9400" + "".join(rng.choice(string.digits) for _ in range(18))
        return " ".join(usps[i : i + 4] for i in range(0, len(usps), 4))
    if k == 13:
        return f"INV-{year}-{rng.randrange(1, 100000):05d}"
    if k == 14:
        return "ISBN " + str(rng.choice((f.isbn13(), f.isbn10())))
    if k == 15:
        return "EAN " + _ean13(rng)
    if k == 16:
        return str(f.address()).replace("\n", ", ")
    if k == 17:
        return str(f.postcode())
    if k == 18:
        amount = rng.randrange(100, 10**7) / 100
        return rng.choice(
            (f"€{amount:,.2f}", f"${amount:,.2f}", f"{amount:,.2f} EUR".replace(",", " "))
        )
    if k == 19:
        return str(f.mac_address()).upper() if rng.random() < 0.5 else str(f.mac_address())
    if k == 20:
        return f.time()
    if k == 21:
        return f"{f.latitude()}, {f.longitude()}"
    if k == 22:
        return str(f.swift(length=rng.choice((8, 11))))
    if k == 23:
        a, b, c = rng.randrange(1, 5), rng.randrange(0, 30), rng.randrange(0, 20)
        return f"{a}.{b}.{c}-rc{rng.randrange(1, 5)}"
    if k == 24:
        return f"{rng.randrange(1, 100)}.{rng.randrange(0, 100)}%"
    if k == 25:
        return f"RE-{year}/{rng.randrange(1, 10000):04d}"
    if k == 26:
        return str(rng.randrange(10**8, 10**9))  # a bare nine-digit reference
    if k == 27:
        return f"{rng.randrange(1000, 10000)} {rng.randrange(1000, 10000)} {rng.randrange(10, 100)}"
    if k == 28:
        return f"case {rng.randrange(10**5, 10**6)}-{rng.randrange(10**3, 10**4)}"
    return (
        f"{year}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}-{rng.randrange(1000, 10000)}"
    )


_FILLERS_NEUTRAL = ("Thanks!", "Best regards.", "Let me know.", "Cheers,", "OK?")


def _log_line(f: Faker, rng: random.Random, doc: Doc) -> None:
    """A key=value log line mixing an IP, an email, a timestamp, a UUID and a duration."""
    parts: list[tuple[str, str | None]] = [
        (f"ts={f.iso8601()}Z", None),
        (f"req={uuid.UUID(int=rng.getrandbits(128), version=4)}", None),
        ("client=", None),
        (_ip(f, rng), "IP_ADDRESS"),
        (" user=", None),
        (str(f.email()), "EMAIL"),
        (f" path=/v1/orders/{rng.randrange(10**6, 10**9)}", None),
        (f" dur={rng.randrange(1, 5000)}ms build={f.sha1()[:7]}", None),
    ]
    text = ""
    for i, (value, entity) in enumerate(parts):
        if i and not value.startswith(" ") and not text.endswith("="):
            text += " "
        if entity is not None:
            doc.gold.append((len(text), len(text) + len(value), entity))
        text += value
    doc.text = text


def build(seed: int = 7, docs_per_locale: int = 300) -> list[Doc]:
    """The corpus: for each locale, ``docs_per_locale`` messages (positives and negatives mixed;
    about a third with no personal data at all, a tenth log lines)."""
    rng = random.Random(seed)
    out: list[Doc] = []
    for locale in LOCALES:
        f = Faker(locale)
        f.seed_instance(rng.randrange(2**32))
        lang = locale[:2]
        templates = T[lang]
        kinds = [e for e in ENTITIES if e in templates or e == "US_SSN"]
        for _ in range(docs_per_locale):
            doc = Doc("", locale)
            roll = rng.random()
            if roll < 0.1:
                _log_line(f, rng, doc)
                out.append(doc)
                continue
            pieces: list[tuple[str, str | None, str | None]] = []  # (template, value, entity)
            if roll < 0.75:
                for _ in range(rng.choice((1, 1, 2, 3))):
                    entity = rng.choice(kinds)
                    if entity == "US_SSN" and locale != "en_US":
                        entity = "PHONE"
                    value = _value(entity, f, rng)
                    pieces.append((rng.choice(_templates(templates, entity)), value, entity))
            for _ in range(rng.choice((1, 1, 2))):
                pieces.append((rng.choice(templates["NEG"]), _negative(f, rng), None))
            if rng.random() < 0.5:
                pieces.append((str(f.sentence(nb_words=rng.randrange(4, 12))), None, None))
            rng.shuffle(pieces)
            text = ""
            for template, value, entity in pieces:
                if text:
                    text += " "
                if value is None:
                    text += template
                    continue
                before, after = template.split("{}")
                text += before
                if entity is not None:
                    doc.gold.append((len(text), len(text) + len(value), entity))
                text += value + after
            if rng.random() < 0.2:
                text += " " + rng.choice(_FILLERS_NEUTRAL)
            doc.text = text
            out.append(doc)
    return out


def _templates(templates: dict[str, list[str]], entity: str) -> list[str]:
    return templates.get(entity) or T["en"][entity]


def _value(entity: str, f: Faker, rng: random.Random) -> str:
    if entity == "EMAIL":
        return str(rng.choice((f.email, f.free_email, f.company_email))())
    if entity == "PHONE":
        return str(f.phone_number())
    if entity == "CREDIT_CARD":
        return _card(rng)
    if entity == "IBAN":
        return _iban(f, rng)
    if entity == "US_SSN":
        return str(f.ssn())
    if entity == "IP_ADDRESS":
        return _ip(f, rng)
    return _api_key(rng)
