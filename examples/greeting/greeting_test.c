/* Checks greeting_format; exits non-zero on any wrong result. */
#include "examples/greeting/greeting.h"

#include <stdio.h>
#include <string.h>

static int failures = 0;

static void expect_eq(const char* got, const char* want) {
  if (strcmp(got, want) != 0) {
    fprintf(stderr, "FAIL: got \"%s\", want \"%s\"\n", got, want);
    failures++;
  }
}

int main(void) {
  char buf[64];
  int n = greeting_format(buf, sizeof(buf), "LRE");
  expect_eq(buf, "Hello from LRE!");
  if (n != 15) {
    fprintf(stderr, "FAIL: length %d, want 15\n", n);
    failures++;
  }
  /* Truncation keeps the buffer NUL-terminated. */
  char small[6];
  greeting_format(small, sizeof(small), "LRE");
  expect_eq(small, "Hello");
  if (failures == 0) printf("greeting_test: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
