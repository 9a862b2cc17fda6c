// liveavatar: command-line entry point (subcommands in cli_*.cpp).
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "liveavatar: not yet implemented\n");
  return 2;
}
