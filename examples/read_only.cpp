// examples/read_only.cpp - read a store while a writer holds it.
//
// Usage: read_only [directory]   (default: a temporary directory, removed at exit)
//
// Only one writer may open a directory (in any process); a second writer
// fails with errc::store_locked. Any number of stores may open it with
// options::read_only meanwhile, in this process or another: each sees the
// store as it was when it opened, and refuses writes with errc::read_only.
// Exits non-zero if any check fails.
#include <cask.hpp>

#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>

#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "  ok    " : "  FAIL  ") << what << std::endl;
  if (!ok) ++failures;
}

using store = cask::log_store<std::string, std::string>;

// What another process sees: open read-only, check one key, exit with the result.
int child_reads(const fs::path& dir) {
  cask::options ro;
  ro.read_only = true;
  std::error_code ec;
  auto db = store::open(dir, ro, ec);
  return db && db->get("config") == "v2" ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const bool own_dir = argc < 2;
  const fs::path dir =
      own_dir ? fs::temp_directory_path() / ("cask-read-only-" + std::to_string(::getpid())) : fs::path(argv[1]);
  std::error_code ec;
  if (own_dir) fs::remove_all(dir, ec);
  std::cout << "store in " << dir << '\n';

  try {
    store writer = store::open(dir);  // holds the directory's writer lock until closed
    writer.put("config", "v1");
    writer.put("owner", "ops");

    // [read_only]
    cask::options ro;
    ro.read_only = true;
    store reader = store::open(dir, ro);  // no lock taken: works while `writer` holds the store
    std::optional<std::string> config = reader.get("config");
    // [read_only]
    expect(config == "v1" && reader.get("owner") == "ops", "a read-only store opened beside the writer reads its data");

    writer.put("config", "v2");
    writer.put("added", "later");
    expect(reader.get("config") == "v1" && !reader.contains("added"),
           "the read-only store keeps the snapshot it opened with");

    std::error_code put_ec;
    reader.put("config", "v3", put_ec);
    expect(put_ec == cask::errc::read_only, "writing through it fails with errc::read_only");

    std::error_code lock_ec;
    auto second_writer = store::open(dir, cask::options{}, lock_ec);
    expect(!second_writer && lock_ec == cask::errc::store_locked, "a second writer fails with errc::store_locked");

    store fresh = store::open(dir, ro);
    expect(fresh.get("config") == "v2" && fresh.get("added") == "later", "a read-only store opened now sees the new writes");

    std::cout.flush();
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(child_reads(dir));
    int status = 0;
    const bool waited = pid > 0 && ::waitpid(pid, &status, 0) == pid;
    expect(waited && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "another process opens it read-only while the writer holds it, and reads \"v2\"");
  } catch (const std::exception& e) {
    std::cout << "  FAIL  exception: " << e.what() << '\n';
    ++failures;
  }

  if (own_dir) fs::remove_all(dir, ec);
  std::cout << (failures ? "read_only: FAILED\n" : "read_only: all checks passed\n");
  return failures ? 1 : 0;
}
