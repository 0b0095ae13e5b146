// libFuzzer target: the AWS issuer's parsers (docs/aws.md, docs/testing.md
// "Fuzzing"): STS's XML answers (aws_sts::ParseXml with its limits, and the
// error reader on top of it) and SigV4 canonicalisation of requests whose
// path, query and headers come from the input. Property: a request that
// canonicalises signs, and its canonical request is what Sign reports.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "issuers/aws_sts/aws_api.h"
#include "issuers/aws_sts/sigv4.h"
#include "issuers/aws_sts/xml.h"

namespace aws = jitbroker::issuers::aws_sts;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeBool()) {
    const std::string xml = in.ConsumeRemainingBytesAsString();
    (void)aws::ParseXml(xml, {.max_bytes = 65536, .max_depth = 16, .max_elements = 1000});
    (void)aws::ParseAwsError(xml);
    return 0;
  }
  aws::SigV4Request req;
  req.method = in.PickValueInArray({"GET", "POST"});
  req.path = in.ConsumeRandomLengthString(256);
  req.query = in.ConsumeRandomLengthString(256);
  const int n = in.ConsumeIntegralInRange(0, 6);
  for (int i = 0; i < n; ++i) {
    std::string name = in.ConsumeRandomLengthString(32);
    std::string value = in.ConsumeRandomLengthString(128);
    req.headers.emplace_back(std::move(name), std::move(value));
  }
  if (in.ConsumeBool()) {
    req.headers.emplace_back("Host", "sts.us-east-1.amazonaws.com");
    req.headers.emplace_back("X-Amz-Date", "20261206T000000Z");
  }
  req.body = in.ConsumeRemainingBytesAsString();
  (void)aws::UriEncode(req.path, true);
  auto canonical = aws::Canonicalize(req);
  if (!canonical) {
    return 0;
  }
  aws::AwsCredentials creds{.access_key_id = "AKIDEXAMPLE",
                            .secret_access_key = jitbroker::SecretValue(std::string("s3cr3t")),
                            .session_token = {}};
  auto sig = aws::Sign(req, creds, "20261206T000000Z", "us-east-1", "sts");
  if (!sig || sig->canonical_request != canonical->text) {
    std::abort();
  }
  return 0;
}
