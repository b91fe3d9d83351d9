// cask.hpp - the umbrella header: everything a user of cask needs.
// Guide to the headers: README.md "Guide to the headers".
#pragma once

#include <cask/checksum.hpp>
#include <cask/codec.hpp>
#include <cask/concepts.hpp>
#include <cask/error.hpp>
#include <cask/hash.hpp>
#include <cask/io.hpp>
#include <cask/keydir.hpp>
#include <cask/log_store.hpp>
#include <cask/options.hpp>
#include <cask/sync.hpp>
#include <cask/version.hpp>
