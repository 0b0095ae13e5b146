#include "issuers/aws_sts/xml.h"

#include <expat.h>

#include <climits>
#include <memory>
#include <type_traits>

namespace jitbroker::issuers::aws_sts {

const XmlElement* XmlElement::Child(std::string_view child_name) const {
  for (const XmlElement& c : children) {
    if (c.name == child_name) {
      return &c;
    }
  }
  return nullptr;
}

const XmlElement* XmlElement::Find(std::string_view path) const {
  const XmlElement* at = this;
  while (at != nullptr && !path.empty()) {
    const size_t slash = path.find('/');
    at = at->Child(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
  }
  return at;
}

std::optional<std::string> XmlElement::Text(std::string_view path) const {
  const XmlElement* e = Find(path);
  if (e == nullptr) {
    return std::nullopt;
  }
  return e->text;
}

namespace {

struct ParseState {
  XML_Parser parser = nullptr;
  const XmlLimits* limits = nullptr;
  XmlElement root;
  bool have_root = false;
  std::vector<XmlElement*> stack;  // open elements, innermost last
  size_t elements = 0;
  std::string error;  // set when a handler stopped the parser

  void Stop(std::string why) {
    if (error.empty()) {
      error = std::move(why);
    }
    XML_StopParser(parser, XML_FALSE);
  }
};

void OnStart(void* data, const XML_Char* name, const XML_Char** /*attrs*/) {
  auto* st = static_cast<ParseState*>(data);
  if (!st->error.empty()) {
    return;
  }
  if (++st->elements > st->limits->max_elements) {
    st->Stop("too many elements");
    return;
  }
  if (static_cast<int>(st->stack.size()) >= st->limits->max_depth) {
    st->Stop("nested too deeply");
    return;
  }
  XmlElement* e = nullptr;
  if (st->stack.empty()) {
    st->root.name = name;
    st->have_root = true;
    e = &st->root;
  } else {
    XmlElement& parent = *st->stack.back();
    parent.children.push_back(XmlElement{name, {}, {}});
    e = &parent.children.back();
  }
  st->stack.push_back(e);
}

void OnEnd(void* data, const XML_Char* /*name*/) {
  auto* st = static_cast<ParseState*>(data);
  if (!st->stack.empty()) {
    st->stack.pop_back();
  }
}

void OnText(void* data, const XML_Char* s, int len) {
  auto* st = static_cast<ParseState*>(data);
  if (!st->stack.empty() && len > 0) {
    st->stack.back()->text.append(s, static_cast<size_t>(len));
  }
}

void OnDoctype(void* data, const XML_Char* /*name*/, const XML_Char* /*sysid*/,
               const XML_Char* /*pubid*/, int /*has_internal_subset*/) {
  static_cast<ParseState*>(data)->Stop("a DOCTYPE is not accepted");
}

void OnEntityDecl(void* data, const XML_Char* /*name*/, int /*is_parameter*/,
                  const XML_Char* /*value*/, int /*len*/, const XML_Char* /*base*/,
                  const XML_Char* /*sysid*/, const XML_Char* /*pubid*/,
                  const XML_Char* /*notation*/) {
  static_cast<ParseState*>(data)->Stop("an entity declaration is not accepted");
}

}  // namespace

Result<XmlElement> ParseXml(std::string_view text, const XmlLimits& limits) {
  auto invalid = [](const std::string& why) {
    return std::unexpected(InvalidArgument("invalid_xml", "the XML answer " + why));
  };
  if (text.size() > limits.max_bytes || text.size() > static_cast<size_t>(INT_MAX)) {
    return invalid("is larger than " + std::to_string(limits.max_bytes) + " bytes");
  }
  std::unique_ptr<std::remove_pointer_t<XML_Parser>, decltype(&XML_ParserFree)> parser(
      XML_ParserCreate("UTF-8"), &XML_ParserFree);
  if (!parser) {
    return std::unexpected(Internal("cannot create an XML parser"));
  }
  ParseState st;
  st.parser = parser.get();
  st.limits = &limits;
  XML_SetUserData(parser.get(), &st);
  XML_SetElementHandler(parser.get(), &OnStart, &OnEnd);
  XML_SetCharacterDataHandler(parser.get(), &OnText);
  XML_SetStartDoctypeDeclHandler(parser.get(), &OnDoctype);
  XML_SetEntityDeclHandler(parser.get(), &OnEntityDecl);
  // Never fetch or read an external entity or DTD.
  XML_SetParamEntityParsing(parser.get(), XML_PARAM_ENTITY_PARSING_NEVER);
  const XML_Status status =
      XML_Parse(parser.get(), text.data(), static_cast<int>(text.size()), XML_TRUE);
  if (!st.error.empty()) {
    return invalid("is refused: " + st.error);
  }
  if (status != XML_STATUS_OK) {
    return invalid(
        "is not well-formed: " + std::string(XML_ErrorString(XML_GetErrorCode(parser.get()))) +
        " at line " + std::to_string(XML_GetCurrentLineNumber(parser.get())));
  }
  if (!st.have_root) {
    return invalid("has no element");
  }
  return std::move(st.root);
}

}  // namespace jitbroker::issuers::aws_sts
