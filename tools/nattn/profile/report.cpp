// Time formatting, ASCII tables and JSON output of `nattn profile`.
#include "nattn/profile/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace nattn::cli::profile {

std::string format_time(double seconds) {
  char text[64];
  if (!std::isfinite(seconds)) return "n/a";
  if (seconds < 1e-3) std::snprintf(text, sizeof(text), "%.3f us", seconds * 1e6);
  else if (seconds < 1.0) std::snprintf(text, sizeof(text), "%.3f ms", seconds * 1e3);
  else std::snprintf(text, sizeof(text), "%.3f s", seconds);
  return text;
}

std::string tuple_string(const std::vector<int64_t>& values) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < values.size(); ++i) os << (i ? ", " : "") << values[i];
  os << ")";
  return os.str();
}

std::string tuple_string(const std::vector<bool>& values) {
  std::string out = "(";
  for (size_t i = 0; i < values.size(); ++i) out += std::string(i ? ", " : "") + (values[i] ? "true" : "false");
  return out + ")";
}

// ---- Table -------------------------------------------------------------------------------------

Table::Table(std::vector<std::string> header, std::vector<bool> right_aligned)
    : header_(std::move(header)), right_aligned_(std::move(right_aligned)) {
  right_aligned_.resize(header_.size(), false);
}

void Table::print(std::ostream& os) const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&widths](const std::vector<std::string>& row) {
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);
  for (const auto& row : footers_) measure(row);

  std::string rule = "+";
  for (size_t w : widths) rule += std::string(w + 2, '-') + "+";
  auto print_row = [&](const std::vector<std::string>& row, bool is_header) {
    os << "|";
    for (size_t c = 0; c < widths.size(); ++c) {
      const std::string cell = c < row.size() ? row[c] : "";
      const std::string pad(widths[c] - cell.size(), ' ');
      const bool right = right_aligned_[c] && !is_header;
      os << " " << (right ? pad + cell : cell + pad) << " |";
    }
    os << "\n";
  };
  for (const std::string& title : titles_) os << title << "\n";
  os << rule << "\n";
  print_row(header_, true);
  os << rule << "\n";
  for (const auto& row : rows_) print_row(row, false);
  if (!footers_.empty()) {
    os << rule << "\n";
    for (const auto& row : footers_) print_row(row, false);
  }
  os << rule << "\n";
}

// ---- JSON --------------------------------------------------------------------------------------

std::string json_escape(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void JsonWriter::newline() {
  os_ << "\n" << std::string(2 * first_in_scope_.size(), ' ');
}

void JsonWriter::before_value() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_in_scope_.empty()) {
    if (!first_in_scope_.back()) os_ << ",";
    first_in_scope_.back() = false;
    newline();
  }
}

JsonWriter& JsonWriter::begin_object() {
  before_value();
  os_ << "{";
  first_in_scope_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::end_object() {
  const bool empty = first_in_scope_.back();
  first_in_scope_.pop_back();
  if (!empty) newline();
  os_ << "}";
  if (first_in_scope_.empty()) os_ << "\n";
  return *this;
}

JsonWriter& JsonWriter::begin_array() {
  before_value();
  os_ << "[";
  first_in_scope_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::end_array() {
  const bool empty = first_in_scope_.back();
  first_in_scope_.pop_back();
  if (!empty) newline();
  os_ << "]";
  return *this;
}

JsonWriter& JsonWriter::key(const std::string& name) {
  before_value();
  os_ << "\"" << json_escape(name) << "\": ";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::value(const std::string& text) {
  before_value();
  os_ << "\"" << json_escape(text) << "\"";
  return *this;
}

JsonWriter& JsonWriter::value(double number) {
  before_value();
  if (!std::isfinite(number)) {
    os_ << "null";
    return *this;
  }
  char text[64];
  std::snprintf(text, sizeof(text), "%.9g", number);
  os_ << text;
  return *this;
}

JsonWriter& JsonWriter::value(int64_t number) {
  before_value();
  os_ << number;
  return *this;
}

JsonWriter& JsonWriter::value(bool flag) {
  before_value();
  os_ << (flag ? "true" : "false");
  return *this;
}

JsonWriter& JsonWriter::null() {
  before_value();
  os_ << "null";
  return *this;
}

// Short numeric lists stay on one line.
JsonWriter& JsonWriter::value(const std::vector<int64_t>& numbers) {
  before_value();
  os_ << "[";
  for (size_t i = 0; i < numbers.size(); ++i) os_ << (i ? ", " : "") << numbers[i];
  os_ << "]";
  return *this;
}

JsonWriter& JsonWriter::value(const std::vector<double>& numbers) {
  before_value();
  os_ << "[";
  for (size_t i = 0; i < numbers.size(); ++i) {
    char text[64];
    if (std::isfinite(numbers[i])) std::snprintf(text, sizeof(text), "%.9g", numbers[i]);
    else std::snprintf(text, sizeof(text), "null");
    os_ << (i ? ", " : "") << text;
  }
  os_ << "]";
  return *this;
}

JsonWriter& JsonWriter::value(const std::vector<bool>& flags) {
  before_value();
  os_ << "[";
  for (size_t i = 0; i < flags.size(); ++i) os_ << (i ? ", " : "") << (flags[i] ? "true" : "false");
  os_ << "]";
  return *this;
}

}  // namespace nattn::cli::profile
