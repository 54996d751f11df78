// The Jinja lexer: template text into pieces (text, {{ }}, {% %}, {# #}) of tokens, then
// whitespace control.
#include <string_view>

#include "chat/jinja_detail.h"
#include "tokenizer/unicode.h"

namespace ranklm::jinja::detail {

using unicode::codepoint_to_utf8;
using unicode::next_codepoint;

namespace {

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  std::vector<Piece> run() {
    std::vector<Piece> out;
    while (pos_ < src_.size()) {
      size_t p = pos_;
      while (p + 1 < src_.size() &&
             !(src_[p] == '{' && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#'))) {
        ++p;
      }
      if (p + 1 >= src_.size()) p = src_.size();
      if (p > pos_) {
        Piece t{PieceKind::Text, std::string(src_.substr(pos_, p - pos_)), {}, line_};
        count_lines(pos_, p);
        out.push_back(std::move(t));
      }
      if (p >= src_.size()) break;
      pos_ = p;
      out.push_back(tag());
    }
    return out;
  }

 private:
  void count_lines(size_t a, size_t b) {
    for (size_t k = a; k < b; ++k) line_ += src_[k] == '\n';
  }

  Piece tag() {
    Piece pc;
    pc.line = line_;
    const char open = src_[pos_ + 1];
    pc.kind = open == '{' ? PieceKind::Var : open == '%' ? PieceKind::Block : PieceKind::Comment;
    pos_ += 2;
    if (pos_ < src_.size() && src_[pos_] == '-') {
      pc.strip_before = true;
      ++pos_;
    } else if (pos_ < src_.size() && src_[pos_] == '+') {
      pc.plus_before = true;
      ++pos_;
    }
    if (pc.kind == PieceKind::Comment) {
      const size_t e = src_.find("#}", pos_);
      if (e == std::string_view::npos) error_at(pc.line, "unterminated comment '{#'");
      if (e > pos_ && src_[e - 1] == '-') pc.strip_after = true;
      count_lines(pos_, e + 2);
      pos_ = e + 2;
      return pc;
    }
    const std::string_view close = pc.kind == PieceKind::Var ? "}}" : "%}";
    for (;;) {
      while (pos_ < src_.size() && is_ws(src_[pos_])) {
        line_ += src_[pos_] == '\n';
        ++pos_;
      }
      if (pos_ >= src_.size()) {
        error_at(pc.line, fmt::format("unterminated tag: expected '{}'", close));
      }
      if ((src_[pos_] == '-' || src_[pos_] == '+') && src_.substr(pos_ + 1, 2) == close) {
        (src_[pos_] == '-' ? pc.strip_after : pc.plus_after) = true;
        pos_ += 3;
        break;
      }
      if (src_.substr(pos_, 2) == close) {
        pos_ += 2;
        break;
      }
      pc.tokens.push_back(token());
    }
    pc.tokens.push_back(Token{Tk::End, "", line_});
    return pc;
  }

  Token token() {
    const char c = src_[pos_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = pos_;
      while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      Token t{Tk::Name, std::string(src_.substr(pos_, e - pos_)), line_};
      pos_ = e;
      return t;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = pos_;
      bool is_float = false;
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        is_float = true;
        ++e;
        while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
      }
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t k = e + 1;
        if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
        if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
          is_float = true;
          e = k;
          while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
        }
      }
      std::string text(src_.substr(pos_, e - pos_));
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      pos_ = e;
      return Token{is_float ? Tk::Float : Tk::Int, text, line_};
    }
    if (c == '\'' || c == '"') return string_literal(c);
    static const char* const two[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : two) {
      if (src_.substr(pos_, 2) == op) {
        pos_ += 2;
        return Token{Tk::Op, op, line_};
      }
    }
    if (std::string_view("()[]{}.,:|~+-*/%<>=!").find(c) != std::string_view::npos) {
      ++pos_;
      return Token{Tk::Op, std::string(1, c), line_};
    }
    error_at(line_, fmt::format("unexpected character '{}' in tag", c));
  }

  Token string_literal(char q) {
    const int start_line = line_;
    std::string out;
    ++pos_;
    while (pos_ < src_.size() && src_[pos_] != q) {
      char c = src_[pos_];
      if (c == '\n') ++line_;
      if (c == '\\' && pos_ + 1 < src_.size()) {
        const char e = src_[++pos_];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case '0': out += '\0'; break;
          case '\\': out += '\\'; break;
          case '\'': out += '\''; break;
          case '"': out += '"'; break;
          case 'u':
          case 'x': {
            const size_t n = e == 'u' ? 4 : 2;
            if (pos_ + n >= src_.size()) error_at(line_, "truncated escape in string literal");
            const std::string hex(src_.substr(pos_ + 1, n));
            if (!std::all_of(hex.begin(), hex.end(), [](char h) { return std::isxdigit(static_cast<unsigned char>(h)); })) {
              error_at(line_, fmt::format("bad escape '\\{}{}' in string literal", e, hex));
            }
            out += codepoint_to_utf8(static_cast<uint32_t>(std::stoul(hex, nullptr, 16)));
            pos_ += n;
            break;
          }
          case '\n': ++line_; break;
          default:
            out += '\\';
            out += e;
        }
        ++pos_;
        continue;
      }
      out += c;
      ++pos_;
    }
    if (pos_ >= src_.size()) error_at(start_line, "unterminated string literal");
    ++pos_;
    return Token{Tk::Str, std::move(out), start_line};
  }

  std::string_view src_;
  size_t pos_ = 0;
  int line_ = 1;
};

// Whitespace control: `-` strips all whitespace on that side; trim_blocks removes the first
// newline after a block or comment tag; lstrip_blocks removes spaces and tabs before a block or
// comment tag that starts a line. `+` turns the last two off for that tag.
void apply_whitespace_control(std::vector<Piece>& pieces) {
  for (size_t k = 0; k < pieces.size(); ++k) {
    Piece& t = pieces[k];
    if (t.kind != PieceKind::Text) continue;
    bool line_start = k == 0;
    if (k > 0) {
      const Piece& prev = pieces[k - 1];
      if (prev.strip_after) {
        size_t n = 0;
        while (n < t.text.size() && is_ws(t.text[n])) ++n;
        line_start = n > 0 && t.text[n - 1] == '\n';
        t.text.erase(0, n);
      } else if ((prev.kind == PieceKind::Block || prev.kind == PieceKind::Comment) && !prev.plus_after) {
        if (t.text.rfind("\r\n", 0) == 0) {
          t.text.erase(0, 2);
          line_start = true;
        } else if (!t.text.empty() && t.text[0] == '\n') {
          t.text.erase(0, 1);
          line_start = true;
        }
      }
    }
    if (k + 1 < pieces.size()) {
      const Piece& next = pieces[k + 1];
      if (next.strip_before) {
        size_t n = t.text.size();
        while (n > 0 && is_ws(t.text[n - 1])) --n;
        t.text.resize(n);
      } else if ((next.kind == PieceKind::Block || next.kind == PieceKind::Comment) && !next.plus_before) {
        const size_t nl = t.text.rfind('\n');
        const size_t from = nl == std::string::npos ? 0 : nl + 1;
        if (nl != std::string::npos || line_start) {
          if (std::all_of(t.text.begin() + static_cast<std::ptrdiff_t>(from), t.text.end(),
                          [](char c) { return c == ' ' || c == '\t'; })) {
            t.text.resize(from);
          }
        }
      }
    }
  }
}


}  // namespace

std::vector<Piece> lex(std::string_view src) {
  std::vector<Piece> pieces = Lexer(src).run();
  apply_whitespace_control(pieces);
  return pieces;
}

}  // namespace ranklm::jinja::detail
