"""Language tags between the API's BCP-47 and the three-letter codes of MP4 and Apertium."""

from octavia_runtime.languages import ISO_639_2, from_three_letter_code, primary_language, three_letter_code


def test_a_tag_is_compared_by_its_primary_subtag():
    assert [primary_language(t) for t in ("pt-BR", "pt_PT", "PT", "en-US")] == ["pt", "pt", "pt", "en"]


def test_three_letter_codes_for_mp4_and_back_for_apertium():
    assert [three_letter_code(t) for t in ("pt-BR", "es", "zh-Hans", "ast", "xx")] == ["por", "spa", "zho", "ast", "und"]
    assert [from_three_letter_code(c) for c in ("por", "SPA", "zlm", "ast")] == ["pt", "es", "ms", "ast"]
    assert all(from_three_letter_code(three) == two for two, three in ISO_639_2.items()), "the table maps both ways"
