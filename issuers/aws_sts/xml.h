// The one XML reader: AWS query-protocol answers (STS, IAM) into a small
// element tree, on Debian's expat. AWS's answers are plain: elements and
// text, no attributes that matter, no mixed content (docs/aws.md, "STS").
//
// Strict and bounded, because the bytes come from the network: at most
// `max_bytes` and `max_depth`, no DOCTYPE (so no entity declarations and no
// entity expansion), well-formed UTF-8 XML or an error. Namespaces are not
// resolved: element names are as written (AWS uses a default namespace).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jitbroker/result.h"

namespace jitbroker::issuers::aws_sts {

struct XmlElement {
  std::string name;
  std::string text;  // the character data directly inside it
  std::vector<XmlElement> children;

  // The first child named `name`, or null.
  const XmlElement* Child(std::string_view child_name) const;
  // The element at a path of child names from this one ("A/B/C"), or null.
  const XmlElement* Find(std::string_view path) const;
  // Find(path)'s text, or nullopt.
  std::optional<std::string> Text(std::string_view path) const;
};

struct XmlLimits {
  size_t max_bytes = 1024 * 1024;
  int max_depth = 16;
  size_t max_elements = 10000;
};

// The document element. Errors: kInvalidArgument "invalid_xml" saying why
// (not well-formed, a DOCTYPE, too large, too deep, too many elements).
[[nodiscard]] Result<XmlElement> ParseXml(std::string_view text, const XmlLimits& limits = {});

}  // namespace jitbroker::issuers::aws_sts
