"""Language tags, as every service compares them."""

from __future__ import annotations


def primary_language(tag: str) -> str:
    """The key under which a BCP-47 tag is looked up: its primary subtag, lower-cased.

    `pt-BR`, `pt_PT` and `PT` all become `pt`; `en-US` becomes `en`. Engines
    are chosen by language alone: a regional variant is served by the
    language's engine (Bergamot's Portuguese is Brazilian).
    """
    return tag.strip().replace("_", "-").split("-", 1)[0].lower()


# ISO 639-1 (the primary subtag of BCP-47, where a language has one) -> ISO 639-2/T, the
# three-letter codes MP4 stores for a track's language and Apertium names its modes with.
ISO_639_2: dict[str, str] = {
    "af": "afr", "am": "amh", "an": "arg", "ar": "ara", "az": "aze", "ba": "bak", "be": "bel", "bg": "bul",
    "bn": "ben", "br": "bre", "bs": "bos", "ca": "cat", "co": "cos", "cs": "ces", "cv": "chv", "cy": "cym",
    "da": "dan", "de": "deu", "el": "ell", "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus",
    "fa": "fas", "fi": "fin", "fo": "fao", "fr": "fra", "ga": "gle", "gd": "gla", "gl": "glg", "gu": "guj",
    "he": "heb", "hi": "hin", "hr": "hrv", "hu": "hun", "hy": "hye", "id": "ind", "is": "isl", "it": "ita",
    "ja": "jpn", "ka": "kat", "kk": "kaz", "km": "khm", "kn": "kan", "ko": "kor", "ky": "kir", "la": "lat",
    "lt": "lit", "lv": "lav", "mk": "mkd", "ml": "mal", "mn": "mon", "mr": "mar", "ms": "msa", "mt": "mlt",
    "my": "mya", "nb": "nob", "ne": "nep", "nl": "nld", "nn": "nno", "no": "nor", "oc": "oci", "pa": "pan",
    "pl": "pol", "pt": "por", "ro": "ron", "ru": "rus", "sc": "srd", "se": "sme", "sh": "hbs", "si": "sin",
    "sk": "slk", "sl": "slv", "sq": "sqi", "sr": "srp", "sv": "swe", "sw": "swa", "ta": "tam", "te": "tel",
    "th": "tha", "tl": "tgl", "tr": "tur", "tt": "tat", "uk": "ukr", "ur": "urd", "uz": "uzb", "vi": "vie",
    "zh": "zho", "zu": "zul",
}  # fmt: skip
# Three-letter codes that name a language above by another code (Standard Malay as `zlm`).
_ISO_639_3_ALIASES = {"zlm": "ms"}
_FROM_THREE_LETTERS = {three: two for two, three in ISO_639_2.items()} | _ISO_639_3_ALIASES


def three_letter_code(tag: str) -> str:
    """The ISO 639-2 code of a BCP-47 tag (`pt-BR` is `por`); `und` (undetermined) for one not known."""
    primary = primary_language(tag)
    if len(primary) == 3:
        return primary
    return ISO_639_2.get(primary, "und")


def from_three_letter_code(code: str) -> str:
    """The BCP-47 primary subtag for an ISO 639-2/3 code (`por` is `pt`); a code without a
    two-letter form (`ast`) is already a valid BCP-47 tag and is kept."""
    return _FROM_THREE_LETTERS.get(code.lower(), code.lower())
