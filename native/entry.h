/* Shared by the entry_*.c files, which are the only code that knows the PKCS#11 C ABI of each function. */
#ifndef AKV_ENTRY_H
#define AKV_ENTRY_H

#include "call.h"
#include "function_ids.h"
#include "marshal.h"
#include "pkcs11_3.h"

/* Opens the round trip for the named function, or returns its CKR_CRYPTOKI_NOT_INITIALIZED. */
#define CALL_BEGIN(c, name)                                   \
  do {                                                        \
    CK_RV begin_rv_ = call_begin(&(c), FN_##name, #name);     \
    if (begin_rv_ != CKR_OK) return begin_rv_;                \
  } while (0)

#endif
