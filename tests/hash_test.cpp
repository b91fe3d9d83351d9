// default_hasher: pinned outputs (a change is a decision), and well-mixed bits at both ends.
#define BOOST_TEST_MODULE hash
#include <boost/test/unit_test.hpp>

#include <cask/hash.hpp>

#include <bit>
#include <cstdio>
#include <set>
#include <string>
#include <string_view>

namespace {
std::uint64_t h(std::string_view s) { return cask::default_hasher{}(std::as_bytes(std::span(s))); }
}  // namespace

BOOST_AUTO_TEST_CASE(golden_values_are_pinned) {
  // Regenerate only on purpose: hashes are never stored, but keydir layout and
  // every benchmark depend on them.
  const std::pair<std::string_view, std::uint64_t> golden[] = {
      {"", 0x3301f033c45f1f00ull},
      {"a", 0x61ddf0f569a77a28ull},
      {"abc", 0xd39b6e9890d043ebull},
      {"0123456789abcdef", 0xe5097a9636bc26c3ull},
      {"the quick brown fox jumps over the lazy dog", 0x6c34f973d5a3ae8bull},
  };
  for (const auto& [s, v] : golden) {
    BOOST_TEST(h(s) == v, "hash of \"" << s << "\"");
  }
}

BOOST_AUTO_TEST_CASE(every_length_up_to_64_gives_distinct_hashes) {
  std::string s;
  std::set<std::uint64_t> seen;
  for (int n = 0; n <= 64; ++n) {
    BOOST_TEST(seen.insert(h(s)).second, "length " << n);
    s.push_back('x');
  }
}

BOOST_AUTO_TEST_CASE(one_bit_of_input_flips_about_half_the_output_bits_at_both_ends) {
  // The keydir takes its shard from the low bits and the home slot from the high bits.
  double low_sum = 0, high_sum = 0;
  int trials = 0;
  for (int len : {4, 8, 16, 17, 33}) {
    std::string s(static_cast<std::size_t>(len), 'k');
    for (int i = 0; i < len * 8; ++i) {
      std::string t = s;
      t[static_cast<std::size_t>(i / 8)] = static_cast<char>(t[static_cast<std::size_t>(i / 8)] ^ (1 << (i % 8)));
      const std::uint64_t d = h(s) ^ h(t);
      low_sum += std::popcount(d & 0xFFFFull);
      high_sum += std::popcount(d >> 48);
      ++trials;
    }
  }
  BOOST_TEST(low_sum / trials > 6.0);
  BOOST_TEST(low_sum / trials < 10.0);
  BOOST_TEST(high_sum / trials > 6.0);
  BOOST_TEST(high_sum / trials < 10.0);
}

BOOST_AUTO_TEST_CASE(sequential_keys_spread_evenly_over_shards) {
  int counts[64] = {};
  char buf[32];
  for (int i = 0; i < 64000; ++i) {
    std::snprintf(buf, sizeof buf, "key%013d", i);
    ++counts[h(buf) & 63];
  }
  for (int c : counts) {
    BOOST_TEST(c > 800);
    BOOST_TEST(c < 1200);
  }
}
