// CleanPromptText: the ftfy.fix_text / html.unescape / whitespace behaviours documented in text_clean.h.
#include "liveavatar/models/t5/text_clean.h"

#include <gtest/gtest.h>

namespace liveavatar::models::t5 {
namespace {

TEST(T5TextClean, PlainTextUnchanged) {
  EXPECT_EQ(CleanPromptText("A white cat on a surfboard."), "A white cat on a surfboard.");
  // Correct non-ASCII text must survive the mojibake repair.
  EXPECT_EQ(CleanPromptText("café naïve jalapeño Ærø über 東京 😀"), "café naïve jalapeño Ærø über 東京 😀");
}

TEST(T5TextClean, FixesUtf8DecodedAsWindows1252) {
  EXPECT_EQ(CleanPromptText("cafÃ© crÃ¨me brÃ»lÃ©e"), "café crème brûlée");
  // Curly-quote mojibake: the repaired quotes are then uncurled like ftfy does.
  EXPECT_EQ(CleanPromptText("donâ€™t say â€œhiâ€\u009d"), "don't say \"hi\"");
  EXPECT_EQ(CleanPromptText("â€”dashâ€¦"), "\u2014dash\u2026");
  EXPECT_EQ(CleanPromptText("na\u00c3\u00afve"), "naïve");
  // Latin-1 decoding (C1 controls instead of the cp1252 letters).
  EXPECT_EQ(CleanPromptText("don\u00e2\u0080\u0099t"), "don't");
  // Doubly encoded.
  EXPECT_EQ(CleanPromptText("cafÃƒÂ©"), "café");
  // Mixed: a correct character next to mojibake.
  EXPECT_EQ(CleanPromptText("é and Ã©"), "é and é");
}

TEST(T5TextClean, OtherFtfyFixes) {
  EXPECT_EQ(CleanPromptText("\u2018single\u2019 \u201cdouble\u201d"), "'single' \"double\"");
  EXPECT_EQ(CleanPromptText("\ufb01ne \ufb02ow"), "fine flow");
  EXPECT_EQ(CleanPromptText("\uff21\uff22\uff23\u3000\uff11\uff12"), "ABC 12");
  EXPECT_EQ(CleanPromptText("bell\x07 del\x7f bom\ufeff"), "bell del bom");
  EXPECT_EQ(CleanPromptText("\x1b[31mred\x1b[0m text"), "red text");
  EXPECT_EQ(CleanPromptText("price \u0080 5"), "price \u20ac 5");  // C1 control -> cp1252
}

TEST(T5TextClean, HtmlUnescape) {
  EXPECT_EQ(CleanPromptText("Tom &amp; Jerry"), "Tom & Jerry");
  EXPECT_EQ(CleanPromptText("caf&eacute; &#233; &#xE9; &#X41;"), "café é é A");
  EXPECT_EQ(CleanPromptText("&amp;lt;b&amp;gt;"), "<b>");  // unescaped until it stops changing (three times)
  EXPECT_EQ(CleanPromptText("&amp;amp;amp;amp;"), "&amp;");  // ftfy + 2x html.unescape: three rounds
  EXPECT_EQ(CleanPromptText("a &lt;b&gt; &amp;amp;"), "a <b> &");
  EXPECT_EQ(CleanPromptText("&foo; & &; &#; &#x;"), "&foo; & &; &#; &#x;");
  EXPECT_EQ(CleanPromptText("&notanentity;"), "\u00acanentity;");  // Python: longest legacy prefix "&not"
  EXPECT_EQ(CleanPromptText("&ampx &copy2026"), "&x ©2026");  // legacy names without ';', longest prefix
  EXPECT_EQ(CleanPromptText("&hellip &hellip;"), "&hellip \u2026");  // HTML4-only name needs ';'
  EXPECT_EQ(CleanPromptText("x&#128;y &#0; &#1;z"), "x\u20acy \ufffd z");  // Python's invalid-charref rules
  EXPECT_EQ(CleanPromptText("&nbsp;&nbsp;a&nbsp;b"), "a b");
  // ftfy leaves entities alone when the text contains '<'; the two html.unescape rounds still apply.
  EXPECT_EQ(HtmlUnescape("&amp;amp;"), "&amp;");
  EXPECT_EQ(FixTextLikeFtfy("<p>&amp;amp;</p>"), "<p>&amp;amp;</p>");
  EXPECT_EQ(CleanPromptText("<p>&amp;amp;amp;</p>"), "<p>&amp;</p>");
}

TEST(T5TextClean, CollapsesWhitespace) {
  EXPECT_EQ(CleanPromptText("  a \t\n b\u00a0\u2003 c\r\n\r\n d  "), "a b c d");
  EXPECT_EQ(CleanPromptText(" \n\t "), "");
  EXPECT_EQ(CleanPromptText(""), "");
  EXPECT_EQ(CollapseWhitespace("x\u2028y\u3000z"), "x y z");
}

TEST(T5TextClean, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(CleanPromptText(std::string("ok\xff") + "ok"), "ok\ufffdok");
}

}  // namespace
}  // namespace liveavatar::models::t5
