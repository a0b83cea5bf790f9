#include "examples/greeting/greeting.h"

#include <stdio.h>

int greeting_format(char* buf, size_t size, const char* name) {
  return snprintf(buf, size, "Hello from %s!", name);
}
