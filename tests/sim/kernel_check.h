/* The small test harness of the simulator's kernel suites (tests/sim/gemm_, grid_ and
   loop_tests.cu, each built on its own): a failed CHECK throws Failure with its place and
   message; run_tests runs each test, prints one line a test and a summary, and gives the exit
   status. */
#pragma once
#include <cstdio>
#include <exception>
#include <string>

namespace kernel_check {

struct Failure {
  std::string what;
};

struct Test {
  const char* name;
  void (*fn)();
};

// Runs every test in order: "ok    NAME" or "FAIL  NAME: why", then "SUITE tests: P passed, F
// failed". Returns 0 when none failed.
template <size_t N>
int run_tests(const char* suite, const Test (&tests)[N]) {
  int passed = 0, failed = 0;
  for (const Test& t : tests) {
    try {
      t.fn();
      ++passed;
      std::printf("ok    %s\n", t.name);
    } catch (const Failure& f) {
      ++failed;
      std::printf("FAIL  %s: %s\n", t.name, f.what.c_str());
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL  %s: exception: %s\n", t.name, e.what());
    }
    std::fflush(stdout);
  }
  std::printf("%s tests: %d passed, %d failed\n", suite, passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace kernel_check

#define CHECK(cond, msg)                                                                             \
  do {                                                                                               \
    if (!(cond))                                                                                     \
      throw ::kernel_check::Failure{std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " + (msg)}; \
  } while (0)
