#include "lib/checksum.h"

std::uint32_t adler32(std::string_view data) {
  constexpr std::uint32_t modulus = 65521;
  std::uint32_t a = 1, b = 0;
  for (unsigned char byte : data) {
    a = (a + byte) % modulus;
    b = (b + a) % modulus;
  }
  return (b << 16) | a;
}
