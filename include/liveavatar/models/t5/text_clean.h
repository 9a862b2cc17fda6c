// Prompt text cleaning applied before tokenization, re-expressing the reference's
// `whitespace_clean(basic_clean(text))` (Wan2.2 `modules/tokenizers.py`):
//   basic_clean      = ftfy.fix_text(text) -> html.unescape(html.unescape(.)) -> strip()
//   whitespace_clean = re.sub(r"\s+", " ", .) -> strip()
//
// ftfy is a large heuristic library; CleanPromptText covers the ftfy.fix_text (v6, default options) behaviours
// that matter for prompts, in ftfy's order:
//   1. HTML unescape (ftfy's unescape_html="auto": only when the text has no '<').
//   2. remove_terminal_escapes: ANSI "ESC [ ... letter" sequences are removed.
//   3. fix_encoding: mojibake from UTF-8 bytes decoded as Windows-1252 / Latin-1 ("Ã©" -> "é", "â€™" -> "’",
//      "â€œ" -> "“"). Every maximal run of characters that Windows-1252 (sloppy: undefined bytes 0x81, 0x8D,
//      0x8F, 0x90, 0x9D map to U+0081...) can encode is re-encoded, and every complete, valid UTF-8 multi-byte
//      sequence inside it is decoded; other characters stay as they are. C1 controls count as their Latin-1
//      byte. Repeated (up to 3 times) for doubly encoded text. Differs from ftfy on purpose-built edge cases:
//      ftfy scores the "badness" of the whole text and may leave a plausible Latin-1 pair such as "Ã»" alone,
//      while this always decodes a valid sequence;
//      ftfy's restore_byte_a0 ("Ã " with a lost 0xA0) and replace_lossy_sequences are not covered.
//   4. fix_c1_controls: remaining U+0080..U+009F are decoded as Windows-1252 ("\u0093" -> "“").
//   5. fix_latin_ligatures: U+FB00..U+FB06 (ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ) -> ff fi fl ffi ffl st st.
//   6. fix_character_width: full-width ASCII U+FF01..U+FF5E -> U+0021..U+007E, ideographic space U+3000 -> ' '.
//      (Half-width katakana are not widened.)
//   7. uncurl_quotes: U+02BC, U+2018..U+201B -> '\''; U+201C..U+201F -> '"'.
//   8. fix_line_breaks: "\r\n", "\r", U+0085, U+2028, U+2029 -> "\n" (then collapsed to ' ' below).
//   9. remove_control_chars: U+0000..U+0008, U+000B, U+000E..U+001F, U+007F, U+206A..U+206F, U+FEFF,
//      U+FFF9..U+FFFC are removed.
//   Not covered: fix_surrogates (input is UTF-8: invalid bytes become U+FFFD), NFC normalization (SentencePiece's
//   nmt_nfkc normalizer applies NFKC, which subsumes it for tokenization).
// Then html.unescape twice, with Python's semantics: numeric references "&#NN;" / "&#xHH;" (';' optional;
// 0x80..0x9F mapped through Windows-1252, invalid code points to U+FFFD or dropped like Python) and named
// references from the HTML 4 set (252 names + "apos", ';' required) plus the HTML5 legacy names that may omit ';'
// ("&amp", "&eacute" ...; longest prefix wins). Other HTML5-only names (e.g. "&NotEqualTilde;") stay as text.
// Finally every run of Unicode White_Space characters becomes one ' ' and the ends are stripped.
//
// Pure function; thread-safe. Input and output are UTF-8.
#pragma once

#include <string>

namespace liveavatar::models::t5 {

std::string CleanPromptText(const std::string& text);

// The pieces, exposed for tests.
std::string FixTextLikeFtfy(const std::string& text);
std::string HtmlUnescape(const std::string& text);
std::string CollapseWhitespace(const std::string& text);

}  // namespace liveavatar::models::t5
