// cask/error.hpp - cask's error category and exception type.
//
// Every fallible operation has two forms, as in std::filesystem: one throws
// cask::error, the other reports through a std::error_code& and never throws
// for I/O or format problems. Codes are either cask::errc values (category
// cask::category()) or errno values (std::system_category()). A missing key
// is not an error: lookups return an empty optional.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

namespace cask {

/// Errors that cask itself detects.
enum class errc {
  corruption = 1,        ///< a record, header or file is malformed (file and offset in the report)
  checksum_mismatch,     ///< a record's checksum does not match its bytes
  bad_magic,             ///< a file does not start with cask's magic: not a cask file
  unsupported_version,   ///< a file's format version is newer than this library reads
  codec_mismatch,        ///< the store was written with another codec or checksum
  store_locked,          ///< another writer (process or log_store object) holds the directory
  read_only,             ///< a write was attempted on a store opened read-only
  store_failed,          ///< an earlier fsync failed; reopen the store before writing again
  not_found,             ///< the directory holds no store and create_if_missing is false
  already_exists,        ///< the directory holds a store and error_if_exists is true
  key_too_large,         ///< the encoded key exceeds options::max_key_bytes
  value_too_large,       ///< the encoded value exceeds options::max_value_bytes
  closed,                ///< the store was closed or moved from
  invalid_argument,      ///< an option or argument is out of range
};

namespace detail {
class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "cask"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::corruption: return "corrupt data";
      case errc::checksum_mismatch: return "checksum mismatch";
      case errc::bad_magic: return "not a cask file (bad magic)";
      case errc::unsupported_version: return "unsupported format version";
      case errc::codec_mismatch: return "store was written with another codec or checksum";
      case errc::store_locked: return "store is locked by another writer";
      case errc::read_only: return "store is open read-only";
      case errc::store_failed: return "store failed after an I/O error; reopen it";
      case errc::not_found: return "no store in this directory";
      case errc::already_exists: return "a store already exists in this directory";
      case errc::key_too_large: return "key too large";
      case errc::value_too_large: return "value too large";
      case errc::closed: return "store is closed";
      case errc::invalid_argument: return "invalid argument";
    }
    return "unknown cask error";
  }
};
}  // namespace detail

/// The category of cask::errc codes.
inline const std::error_category& category() noexcept {
  static const detail::category_impl c;
  return c;
}

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

/// Thrown by the throwing forms. Carries the file and byte offset where they
/// apply (path() empty and offset() == npos otherwise).
class error : public std::system_error {
 public:
  /// offset() when no offset applies.
  static constexpr std::uint64_t npos = ~std::uint64_t{0};

  /// An error with code `ec` at `offset` in `path` (either may be absent).
  error(std::error_code ec, std::filesystem::path path = {}, std::uint64_t offset = npos)
      : std::system_error(ec, describe(ec, path, offset)), path_(std::move(path)), offset_(offset) {}

  /// The file concerned, or empty.
  const std::filesystem::path& path() const noexcept { return path_; }
  /// The byte offset in path() where the problem lies, or npos.
  std::uint64_t offset() const noexcept { return offset_; }

 private:
  static std::string describe(std::error_code ec, const std::filesystem::path& p, std::uint64_t off) {
    std::string s = "cask";
    if (!p.empty()) s += ": " + p.string();
    if (off != npos) s += " at offset " + std::to_string(off);
    (void)ec;  // std::system_error appends ec.message()
    return s;
  }

  std::filesystem::path path_;
  std::uint64_t offset_;
};

}  // namespace cask

// Makes cask::errc convertible to std::error_code. Hidden from Doxygen, which mis-scopes it.
/// @cond
template <>
struct std::is_error_code_enum<cask::errc> : std::true_type {};
/// @endcond

namespace cask::detail {

/// Where an error happened, kept beside a std::error_code so that the throwing
/// forms can name the file and offset.
struct error_site {
  std::filesystem::path path;
  std::uint64_t offset = error::npos;
};

/// Records `e` at (path, offset) unless an earlier error is already recorded.
inline void set_error(std::error_code& ec, error_site* site, std::error_code e,
                      const std::filesystem::path& path = {}, std::uint64_t offset = error::npos) {
  if (ec) return;
  ec = e;
  if (site) {
    site->path = path;
    site->offset = offset;
  }
}

inline std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

}  // namespace cask::detail
