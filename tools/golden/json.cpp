// Recursive-descent JSON parser (RFC 8259 grammar, plus NaN/Infinity literals).
#include "golden/json.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "nattn/errors.h"

namespace nattn::golden {

const Json* Json::find(const std::string& key) const {
  if (kind != Kind::object) return nullptr;
  for (const auto& member : object) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

const char* kind_name(Json::Kind kind) {
  switch (kind) {
    case Json::Kind::null: return "null";
    case Json::Kind::boolean: return "bool";
    case Json::Kind::number: return "number";
    case Json::Kind::string: return "string";
    case Json::Kind::array: return "array";
    case Json::Kind::object: return "object";
  }
  return "?";
}

namespace {

// Nesting limit, so a hostile file cannot exhaust the stack.
constexpr int kMaxDepth = 256;

class Parser {
 public:
  Parser(const std::string& text, const std::string& source) : text_(text), source_(source) {}

  Json document() {
    skip_space();
    Json value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    throw ValueError(source_ + ":" + std::to_string(line) + ":" + std::to_string(column) +
                     ": malformed JSON: " + what);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_space() {
    while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool consume_literal(const char* word) {
    const std::string w(word);
    if (text_.compare(pos_, w.size(), w) == 0) {
      pos_ += w.size();
      return true;
    }
    return false;
  }

  Json parse_value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
    if (at_end()) fail("unexpected end of input, expected a value");
    Json value;
    const char c = peek();
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') {
      value.kind = Json::Kind::string;
      value.string = parse_string();
      return value;
    }
    if (consume_literal("true")) {
      value.kind = Json::Kind::boolean;
      value.boolean = true;
      return value;
    }
    if (consume_literal("false")) {
      value.kind = Json::Kind::boolean;
      return value;
    }
    if (consume_literal("null")) return value;
    if (consume_literal("NaN")) return number(std::numeric_limits<double>::quiet_NaN());
    if (consume_literal("Infinity")) return number(std::numeric_limits<double>::infinity());
    if (consume_literal("-Infinity")) return number(-std::numeric_limits<double>::infinity());
    if (c == '-' || (c >= '0' && c <= '9')) return number(parse_number());
    fail(std::string("unexpected character '") + c + "'");
  }

  static Json number(double x) {
    Json value;
    value.kind = Json::Kind::number;
    value.number = x;
    return value;
  }

  Json parse_object(int depth) {
    Json value;
    value.kind = Json::Kind::object;
    ++pos_;  // '{'
    skip_space();
    if (peek() == '}') {
      ++pos_;
      return value;
    }
    for (;;) {
      skip_space();
      if (peek() != '"') fail("expected a string key in an object");
      std::string key = parse_string();
      skip_space();
      if (peek() != ':') fail("expected ':' after an object key");
      ++pos_;
      skip_space();
      value.object.emplace_back(std::move(key), parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return value;
      }
      fail("expected ',' or '}' in an object");
    }
  }

  Json parse_array(int depth) {
    Json value;
    value.kind = Json::Kind::array;
    ++pos_;  // '['
    skip_space();
    if (peek() == ']') {
      ++pos_;
      return value;
    }
    for (;;) {
      skip_space();
      value.array.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return value;
      }
      fail("expected ',' or ']' in an array");
    }
  }

  double parse_number() {
    // Check the JSON grammar first (strtod accepts more: hex, leading '+', "inf").
    const size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      fail("invalid number");
    }
    if (peek() == '.') {
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("invalid number: digits expected after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("invalid number: digits expected in the exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    const std::string literal = text_.substr(start, pos_ - start);
    return std::strtod(literal.c_str(), nullptr);
  }

  uint32_t parse_hex4() {
    uint32_t code = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = peek();
      uint32_t digit;
      if (h >= '0' && h <= '9') digit = static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') digit = static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') digit = static_cast<uint32_t>(h - 'A' + 10);
      else fail("invalid \\u escape");
      code = code * 16 + digit;
      ++pos_;
    }
    return code;
  }

  static void append_utf8(std::string& out, uint32_t code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xc0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xe0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) fail("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t code = parse_hex4();
          if (code >= 0xd800 && code < 0xdc00 && text_.compare(pos_, 2, "\\u") == 0) {
            pos_ += 2;
            const uint32_t low = parse_hex4();
            if (low < 0xdc00 || low >= 0xe000) fail("invalid surrogate pair");
            code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, code);
          break;
        }
        default: fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  const std::string& text_;
  const std::string& source_;
  size_t pos_ = 0;
};

}  // namespace

Json parse_json(const std::string& text, const std::string& source) {
  return Parser(text, source).document();
}

}  // namespace nattn::golden
