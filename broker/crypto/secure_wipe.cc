#include <cstddef>

#include <openssl/crypto.h>

#include "jitbroker/secret.h"

namespace jitbroker {

// OPENSSL_cleanse is written so the compiler cannot elide it as a dead store.
void SecureWipe(void* data, size_t size) {
  if (data == nullptr || size == 0) {
    return;
  }
  OPENSSL_cleanse(data, size);
}

}  // namespace jitbroker
