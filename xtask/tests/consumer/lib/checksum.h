#pragma once

#include <cstdint>
#include <string_view>

// Adler-32 of `data`, as zlib defines it.
std::uint32_t adler32(std::string_view data);
