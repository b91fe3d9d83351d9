// The one translation unit that instantiates these stores (README, "Compile
// time"): every other file of headers_test declares them `extern template`.
// An explicit instantiation also compiles every member whose constraints
// hold for the arguments, used or not, so a member that does not compile for
// an integer key or a byte-vector value fails the build here.
#include <cask.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

template class cask::log_store<std::string, std::string>;
template class cask::log_store<std::uint64_t, std::vector<std::byte>>;
