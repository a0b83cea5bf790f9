// Smallest C++ program built with the LRE toolchain.
#include <iostream>
#include <string>

extern "C" {
#include "examples/greeting/greeting.h"
}

int main(int argc, char** argv) {
  char buffer[128];
  greeting_format(buffer, sizeof(buffer), argc > 1 ? argv[1] : "LRE");
  std::cout << std::string(buffer) << std::endl;
  return 0;
}
