// Output helpers of `nattn profile`: time formatting, ASCII tables, a small JSON writer.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace nattn::cli::profile {

// "{:.3f}" with the unit that keeps the number readable: "812.500 us", "1.234 ms", "2.000 s".
std::string format_time(double seconds);

// "(56, 56)"
std::string tuple_string(const std::vector<int64_t>& values);
std::string tuple_string(const std::vector<bool>& values);

// An ASCII table with an optional title, a header, rows, and optional footer rows (separated from
// the rows by a rule). Columns listed in `right_aligned` are right-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header, std::vector<bool> right_aligned = {});
  void add_title(std::string line) { titles_.push_back(std::move(line)); }
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void add_footer(std::vector<std::string> row) { footers_.push_back(std::move(row)); }
  void print(std::ostream& os) const;

 private:
  std::vector<std::string> titles_;
  std::vector<std::string> header_;
  std::vector<bool> right_aligned_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<std::vector<std::string>> footers_;
};

// Streaming JSON writer. Keys and values are written in call order; commas and indentation are
// handled here. Non-finite numbers are written as null (JSON has no NaN).
class JsonWriter {
 public:
  explicit JsonWriter(std::ostream& os) : os_(os) {}
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(const std::string& name);
  JsonWriter& value(const std::string& text);
  JsonWriter& value(const char* text) { return value(std::string(text)); }
  JsonWriter& value(double number);
  JsonWriter& value(int64_t number);
  JsonWriter& value(int number) { return value(static_cast<int64_t>(number)); }
  JsonWriter& value(bool flag);
  JsonWriter& null();
  JsonWriter& value(const std::vector<int64_t>& numbers);
  JsonWriter& value(const std::vector<double>& numbers);
  JsonWriter& value(const std::vector<bool>& flags);

 private:
  void before_value();
  void newline();
  std::ostream& os_;
  std::vector<bool> first_in_scope_;  // one entry per open object/array
  bool after_key_ = false;
};

std::string json_escape(const std::string& text);

}  // namespace nattn::cli::profile
