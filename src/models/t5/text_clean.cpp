#include "liveavatar/models/t5/text_clean.h"

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace liveavatar::models::t5 {
namespace {

using CodePoints = std::vector<char32_t>;
constexpr char32_t kReplacement = 0xFFFD;

// ---- UTF-8 ----------------------------------------------------------------------------------------------------

// Length of the valid UTF-8 sequence at bytes[i..], decoding it into *cp; 0 when invalid or incomplete.
size_t DecodeOne(const uint8_t* bytes, size_t n, size_t i, char32_t* cp) {
  const uint8_t b0 = bytes[i];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t len;
  char32_t value;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > n) return 0;
  for (size_t k = 1; k < len; ++k) {
    const uint8_t b = bytes[i + k];
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  return len;
}

CodePoints DecodeUtf8(const std::string& text) {
  CodePoints out;
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  for (size_t i = 0; i < text.size();) {
    char32_t cp;
    const size_t len = DecodeOne(bytes, text.size(), i, &cp);
    if (len == 0) {
      out.push_back(kReplacement);
      ++i;
    } else {
      out.push_back(cp);
      i += len;
    }
  }
  return out;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string EncodeUtf8(const CodePoints& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) AppendUtf8(cp, &out);
  return out;
}

// ---- Windows-1252 ---------------------------------------------------------------------------------------------

// Windows-1252 bytes 0x80..0x9F; 0 = undefined (the "sloppy" codec maps those bytes to U+0080+n).
constexpr char32_t kCp1252High[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

// Byte of `cp` in Windows-1252 or Latin-1 (C1 controls), or -1 when it has none.
int Cp1252Byte(char32_t cp) {
  if (cp < 0x80 || (cp >= 0xA0 && cp <= 0xFF)) return static_cast<int>(cp);
  if (cp >= 0x80 && cp <= 0x9F) return static_cast<int>(cp);  // Latin-1 reading of any byte 0x80..0x9F
  for (int i = 0; i < 32; ++i) {
    if (kCp1252High[i] == cp) return 0x80 + i;
  }
  return -1;
}

char32_t Cp1252Char(uint8_t byte) {
  if (byte >= 0x80 && byte <= 0x9F && kCp1252High[byte - 0x80] != 0) return kCp1252High[byte - 0x80];
  return byte;
}

// One pass of the mojibake repair; returns true when something changed.
bool FixMojibakeOnce(CodePoints* text) {
  CodePoints out;
  out.reserve(text->size());
  bool changed = false;
  const CodePoints& in = *text;
  size_t i = 0;
  while (i < in.size()) {
    if (Cp1252Byte(in[i]) < 0x80) {  // ASCII or not encodable: copy
      out.push_back(in[i++]);
      continue;
    }
    // Maximal run of encodable characters starting here (may include ASCII).
    size_t j = i;
    std::vector<uint8_t> bytes;
    while (j < in.size()) {
      const int b = Cp1252Byte(in[j]);
      if (b < 0) break;
      bytes.push_back(static_cast<uint8_t>(b));
      ++j;
    }
    for (size_t k = 0; k < bytes.size();) {
      char32_t cp;
      const size_t len = bytes[k] >= 0x80 ? DecodeOne(bytes.data(), bytes.size(), k, &cp) : 0;
      if (len >= 2) {
        out.push_back(cp);
        changed = true;
        k += len;
      } else {
        out.push_back(in[i + k]);
        ++k;
      }
    }
    i = j;
  }
  if (changed) *text = std::move(out);
  return changed;
}

bool IsRemovedControl(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// Unicode White_Space (what `\s` of Python's `regex` module matches).
bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// ---- HTML -----------------------------------------------------------------------------------------------------

struct Entity {
  const char* name;
  char32_t cp;
  bool legacy;  // may appear without the terminating ';'
};

constexpr Entity kEntities[] = {
#include "models/t5/html_entities.inc"
};

const Entity* FindEntity(std::string_view name) {
  for (const auto& e : kEntities) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

bool IsInvalidCodePoint(uint32_t n) {
  return (n >= 0x1 && n <= 0x8) || (n >= 0xE && n <= 0x1F) || (n >= 0x7F && n <= 0x9F) ||
         (n >= 0xFDD0 && n <= 0xFDEF) || n == 0xB || (n & 0xFFFE) == 0xFFFE;
}

// Python html.unescape numeric reference semantics.
void AppendNumericReference(uint64_t n, bool overflow, std::string* out) {
  if (overflow) {
    AppendUtf8(kReplacement, out);
  } else if (n == 0) {
    AppendUtf8(kReplacement, out);
  } else if (n == 0x0D) {
    out->push_back('\r');
  } else if (n >= 0x80 && n <= 0x9F) {
    AppendUtf8(Cp1252Char(static_cast<uint8_t>(n)), out);
  } else if ((n >= 0xD800 && n <= 0xDFFF) || n > 0x10FFFF) {
    AppendUtf8(kReplacement, out);
  } else if (IsInvalidCodePoint(static_cast<uint32_t>(n))) {
    // dropped
  } else {
    AppendUtf8(static_cast<char32_t>(n), out);
  }
}

bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

// Tries to decode a reference at text[i] == '&'. On success appends the result and returns the number of bytes
// consumed; returns 0 when the text is not a reference (the '&' is literal).
size_t DecodeReference(const std::string& text, size_t i, std::string* out) {
  const size_t n = text.size();
  size_t p = i + 1;
  if (p < n && text[p] == '#') {
    ++p;
    const bool hex = p < n && (text[p] == 'x' || text[p] == 'X');
    if (hex) ++p;
    const size_t digits_begin = p;
    uint64_t value = 0;
    bool overflow = false;
    while (p < n && (hex ? IsHexDigit(text[p]) : (text[p] >= '0' && text[p] <= '9'))) {
      value = value * (hex ? 16 : 10) + static_cast<uint64_t>(hex ? HexValue(text[p]) : text[p] - '0');
      if (value > 0x10FFFFull * 16) overflow = true, value = 0x10FFFFull * 16;
      ++p;
    }
    if (p == digits_begin) return 0;
    if (p < n && text[p] == ';') ++p;
    AppendNumericReference(value, overflow, out);
    return p - i;
  }
  // Named: [^\t\n\f <&#;]{1,32};?
  size_t q = p;
  while (q < n && q - p < 32 && std::strchr("\t\n\f <&#;", text[q]) == nullptr) ++q;
  if (q == p) return 0;
  const std::string_view name(text.data() + p, q - p);
  const bool semicolon = q < n && text[q] == ';';
  if (semicolon) {
    if (const Entity* e = FindEntity(name)) {
      AppendUtf8(e->cp, out);
      return q + 1 - i;
    }
  } else if (const Entity* e = FindEntity(name); e != nullptr && e->legacy) {
    AppendUtf8(e->cp, out);
    return q - i;
  }
  // Longest legacy prefix (at least 2 characters), the rest stays as text.
  for (size_t len = name.size() - 1; len >= 2; --len) {
    const Entity* e = FindEntity(name.substr(0, len));
    if (e != nullptr && e->legacy) {
      AppendUtf8(e->cp, out);
      return 1 + len;
    }
  }
  return 0;
}

}  // namespace

std::string HtmlUnescape(const std::string& text) {
  if (text.find('&') == std::string::npos) return text;
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '&') {
      const size_t used = DecodeReference(text, i, &out);
      if (used > 0) {
        i += used;
        continue;
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

std::string FixTextLikeFtfy(const std::string& input) {
  // 1. unescape_html="auto"
  std::string text = input.find('<') == std::string::npos ? HtmlUnescape(input) : input;
  CodePoints cps = DecodeUtf8(text);
  // 2. remove_terminal_escapes: ESC '[' [0-9;]* letter
  {
    CodePoints out;
    out.reserve(cps.size());
    for (size_t i = 0; i < cps.size(); ++i) {
      if (cps[i] == 0x1B && i + 1 < cps.size() && cps[i + 1] == '[') {
        size_t j = i + 2;
        while (j < cps.size() && ((cps[j] >= '0' && cps[j] <= '9') || cps[j] == ';')) ++j;
        if (j < cps.size() && ((cps[j] >= 'A' && cps[j] <= 'Z') || (cps[j] >= 'a' && cps[j] <= 'z'))) {
          i = j;
          continue;
        }
      }
      out.push_back(cps[i]);
    }
    cps.swap(out);
  }
  // 3. fix_encoding
  for (int pass = 0; pass < 3 && FixMojibakeOnce(&cps); ++pass) {
  }
  CodePoints out;
  out.reserve(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    char32_t c = cps[i];
    // 4. fix_c1_controls
    if (c >= 0x80 && c <= 0x9F) {
      if (c == 0x85) {  // NEL is a line break (8.) in ftfy's order it is handled as one
        out.push_back('\n');
        continue;
      }
      c = Cp1252Char(static_cast<uint8_t>(c));
    }
    // 5. fix_latin_ligatures
    switch (c) {
      case 0xFB00: out.insert(out.end(), {'f', 'f'}); continue;
      case 0xFB01: out.insert(out.end(), {'f', 'i'}); continue;
      case 0xFB02: out.insert(out.end(), {'f', 'l'}); continue;
      case 0xFB03: out.insert(out.end(), {'f', 'f', 'i'}); continue;
      case 0xFB04: out.insert(out.end(), {'f', 'f', 'l'}); continue;
      case 0xFB05:
      case 0xFB06: out.insert(out.end(), {'s', 't'}); continue;
      default: break;
    }
    // 6. fix_character_width
    if (c >= 0xFF01 && c <= 0xFF5E) c = c - 0xFF01 + 0x21;
    if (c == 0x3000) c = ' ';
    // 7. uncurl_quotes
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
    if (c >= 0x201C && c <= 0x201F) c = '"';
    // 8. fix_line_breaks
    if (c == '\r') {
      if (i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
      c = '\n';
    }
    if (c == 0x2028 || c == 0x2029) c = '\n';
    // 9. remove_control_chars
    if (IsRemovedControl(c)) continue;
    out.push_back(c);
  }
  return EncodeUtf8(out);
}

std::string CollapseWhitespace(const std::string& text) {
  const CodePoints cps = DecodeUtf8(text);
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char32_t c : cps) {
    if (IsWhiteSpace(c)) {
      pending_space = true;
      continue;
    }
    if (pending_space && !out.empty()) out.push_back(' ');
    pending_space = false;
    AppendUtf8(c, &out);
  }
  return out;
}

std::string CleanPromptText(const std::string& text) {
  // basic_clean: fix_text, unescape twice, strip (the strip is subsumed by the collapse below).
  std::string cleaned = HtmlUnescape(HtmlUnescape(FixTextLikeFtfy(text)));
  return CollapseWhitespace(cleaned);
}

}  // namespace liveavatar::models::t5
