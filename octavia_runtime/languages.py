"""Language tags, as every service compares them."""

from __future__ import annotations


def primary_language(tag: str) -> str:
    """The key under which a BCP-47 tag is looked up: its primary subtag, lower-cased.

    `pt-BR`, `pt_PT` and `PT` all become `pt`; `en-US` becomes `en`. Engines
    are chosen by language alone: a regional variant is served by the
    language's engine (Bergamot's Portuguese is Brazilian).
    """
    return tag.strip().replace("_", "-").split("-", 1)[0].lower()
