// libFuzzer target: the policy's pattern matching on what agents send
// (docs/testing.md, "Fuzzing"): globs and exact matchers (policy::Matcher;
// regular expressions come only from the operator's config, so the fixed
// ones below run against fuzzed values), resource coverage, scope patterns,
// `argv:` command patterns and the shell reader under them. Properties:
//   - ScopePatternWithin(inner, outer) is exact: an item inner matches is
//     matched by outer (a task scope never widens its role's);
//   - a glob matcher and a case-folded one agree on lower-case input.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "broker/policy/shell_words.h"
#include "jitbroker/policy.h"

namespace {

struct Fixed {
  std::vector<jitbroker::Matcher> regexes;
  std::vector<jitbroker::ArgvPattern> argv;
};

const Fixed& TheFixed() {
  static const Fixed* f = [] {
    auto* out = new Fixed;
    for (const char* re : {"re:^rm -rf.*", "re:^(git|gh) .*push.*", "re:.*--force.*"}) {
      auto m = jitbroker::Matcher::Compile(re);
      if (!m) {
        std::abort();
      }
      out->regexes.push_back(std::move(*m));
    }
    for (const char* a :
         {"argv:rm -r|-R|--recursive -f|--force", "argv:git --force|-f", "argv:kubectl|oc --all"}) {
      auto p = jitbroker::ArgvPattern::Parse(a);
      if (!p) {
        std::abort();
      }
      out->argv.push_back(std::move(*p));
    }
    return out;
  }();
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string inner = in.ConsumeRandomLengthString(64);
  const std::string outer = in.ConsumeRandomLengthString(64);
  const std::string value = in.ConsumeRemainingBytesAsString();

  if (!inner.starts_with("re:")) {
    auto m = jitbroker::Matcher::Compile(inner);
    auto folded = jitbroker::Matcher::Compile(inner, true);
    if (m && folded) {
      const bool plain = m->Matches(value);
      const bool lower =
          std::all_of(inner.begin(), inner.end(), [](char c) { return !(c >= 'A' && c <= 'Z'); }) &&
          std::all_of(value.begin(), value.end(), [](char c) { return !(c >= 'A' && c <= 'Z'); });
      if (lower && plain != folded->Matches(value)) {
        std::abort();
      }
    }
  }
  (void)jitbroker::ResourceCovers(inner, value);
  if (jitbroker::ScopePatternWithin(inner, outer) && jitbroker::ScopePatternMatches(inner, value) &&
      !jitbroker::ScopePatternMatches(outer, value)) {
    std::abort();
  }
  (void)jitbroker::ArgvPattern::Parse(inner);
  const Fixed& fixed = TheFixed();
  for (const auto& re : fixed.regexes) {
    (void)re.Matches(value);
  }
  for (const auto& a : fixed.argv) {
    (void)a.MatchesCommandLine(value);
  }
  (void)jitbroker::shell::Split(value);
  return 0;
}
