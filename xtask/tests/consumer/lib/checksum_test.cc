#include "lib/checksum.h"

#include <cstdio>

int main() {
  struct Case { const char* input; std::uint32_t want; };
  const Case cases[] = {{"", 0x00000001u}, {"a", 0x00620062u}, {"Wikipedia", 0x11E60398u}};
  int failures = 0;
  for (const Case& c : cases) {
    std::uint32_t got = adler32(c.input);
    if (got != c.want) {
      std::fprintf(stderr, "adler32(\"%s\") = %08x, want %08x\n", c.input, got, c.want);
      ++failures;
    }
  }
  std::printf("checksum_test: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
