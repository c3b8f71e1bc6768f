/* A PKCS#11 host for test/module/ulong-width.test.ts, built with -m32 so that CK_ULONG is 4 bytes, as on 32-bit
 * Linux hosts. Usage: ulong-driver <module.so> <token label> <message>. Prints "key value" lines; the test judges:
 * the sizes the module reports for CK_ULONG attributes, their values, the public key, and a signature over the
 * message (CKM_SHA256_RSA_PKCS or CKM_ECDSA_SHA256, by key type), which the test verifies with node:crypto. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#define PRINT_RV(key, rv) printf("%s 0x%lx\n", key, (unsigned long)(rv))

static void print_hex(const char *key, const CK_BYTE *bytes, CK_ULONG length) {
  printf("%s ", key);
  for (CK_ULONG i = 0; i < length; i++) printf("%02x", bytes[i]);
  printf("\n");
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: ulong-driver MODULE TOKEN_LABEL MESSAGE\n");
    return 2;
  }
  void *module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (module == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  CK_FUNCTION_LIST_PTR f;
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
  if (get == NULL || get(&f) != CKR_OK) return 2;
  printf("sizeofUlong %u\n", (unsigned)sizeof(CK_ULONG));
  PRINT_RV("Initialize", f->C_Initialize(NULL));

  CK_ULONG count = 0;
  PRINT_RV("GetSlotList.query", f->C_GetSlotList(CK_TRUE, NULL, &count));
  printf("slots %lu\n", (unsigned long)count);
  CK_SLOT_ID slots[8];
  if (count > 8) count = 8;
  f->C_GetSlotList(CK_TRUE, slots, &count);
  CK_SLOT_ID slot = 0;
  int found = 0;
  for (CK_ULONG i = 0; i < count && !found; i++) {
    CK_TOKEN_INFO info;
    f->C_GetTokenInfo(slots[i], &info);
    size_t n = strlen(argv[2]);
    if (memcmp(info.label, argv[2], n) == 0 && (n == 32 || info.label[n] == ' ')) {
      slot = slots[i];
      found = 1;
      /* CK_EFFECTIVELY_INFINITE and CK_UNAVAILABLE_INFORMATION must fit a 4-byte CK_ULONG. */
      printf("token.maxSessionCount 0x%lx\n", (unsigned long)info.ulMaxSessionCount);
      printf("token.totalPublicMemory 0x%lx\n", (unsigned long)info.ulTotalPublicMemory);
    }
  }
  printf("found %d\n", found);
  if (!found) return 1;

  /* A token offers the mechanisms of its key's type: the other family's gets CKR_MECHANISM_INVALID. */
  CK_MECHANISM_INFO mechanism_info;
  memset(&mechanism_info, 0, sizeof mechanism_info);
  PRINT_RV("GetMechanismInfo.rsaPkcs", f->C_GetMechanismInfo(slot, CKM_RSA_PKCS, &mechanism_info));
  printf("mechanism.rsaPkcs %lu-%lu\n", (unsigned long)mechanism_info.ulMinKeySize, (unsigned long)mechanism_info.ulMaxKeySize);
  memset(&mechanism_info, 0, sizeof mechanism_info);
  PRINT_RV("GetMechanismInfo.ecdsa", f->C_GetMechanismInfo(slot, CKM_ECDSA, &mechanism_info));
  printf("mechanism.ecdsa %lu-%lu\n", (unsigned long)mechanism_info.ulMinKeySize, (unsigned long)mechanism_info.ulMaxKeySize);

  CK_SESSION_HANDLE session;
  PRINT_RV("OpenSession", f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_OBJECT_CLASS private_class = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE template[] = {{CKA_CLASS, &private_class, sizeof private_class}};
  CK_OBJECT_HANDLE key;
  CK_ULONG n = 0;
  f->C_FindObjectsInit(session, template, 1);
  f->C_FindObjects(session, &key, 1, &n);
  f->C_FindObjectsFinal(session);
  printf("keys %lu\n", (unsigned long)n);

  /* Length queries for CK_ULONG attributes must answer sizeof(CK_ULONG) of this host: 4. */
  CK_ATTRIBUTE sizes[] = {{CKA_CLASS, NULL, 0}, {CKA_KEY_TYPE, NULL, 0}, {CKA_MODULUS_BITS, NULL, 0}, {CKA_SIGN, NULL, 0}};
  CK_RV rv = f->C_GetAttributeValue(session, key, sizes, 4);
  PRINT_RV("sizes", rv);
  printf("size.class %ld\n", (long)sizes[0].ulValueLen);
  printf("size.keyType %ld\n", (long)sizes[1].ulValueLen);
  printf("size.modulusBits %ld\n", (long)sizes[2].ulValueLen);
  printf("size.sign %ld\n", (long)sizes[3].ulValueLen);

  CK_OBJECT_CLASS klass = 0;
  CK_KEY_TYPE key_type = 0;
  CK_ATTRIBUTE values[] = {{CKA_CLASS, &klass, sizeof klass}, {CKA_KEY_TYPE, &key_type, sizeof key_type}};
  PRINT_RV("values", f->C_GetAttributeValue(session, key, values, 2));
  printf("class %lu\n", (unsigned long)klass);
  printf("keyType %lu\n", (unsigned long)key_type);
  /* A CK_ULONG attribute into a buffer one byte short: CKR_BUFFER_TOO_SMALL, and the length says what is needed. */
  CK_BYTE short_buffer[3];
  CK_ATTRIBUTE too_small[] = {{CKA_KEY_TYPE, short_buffer, sizeof short_buffer}};
  PRINT_RV("tooSmall", f->C_GetAttributeValue(session, key, too_small, 1));
  printf("tooSmall.length %ld\n", (long)too_small[0].ulValueLen);

  CK_MECHANISM mechanism = {key_type == CKK_RSA ? CKM_SHA256_RSA_PKCS : CKM_ECDSA_SHA256, NULL, 0};
  if (key_type == CKK_RSA) {
    CK_ULONG bits = 0;
    CK_BYTE modulus[1024];
    CK_ATTRIBUTE rsa[] = {{CKA_MODULUS_BITS, &bits, sizeof bits}, {CKA_MODULUS, modulus, sizeof modulus}};
    PRINT_RV("rsa", f->C_GetAttributeValue(session, key, rsa, 2));
    printf("modulusBits %lu\n", (unsigned long)bits);
    print_hex("modulus", modulus, rsa[1].ulValueLen);
  } else {
    CK_BYTE point[200];
    CK_ATTRIBUTE ec[] = {{CKA_EC_POINT, point, sizeof point}};
    PRINT_RV("ec", f->C_GetAttributeValue(session, key, ec, 1));
    print_hex("ecPoint", point, ec[0].ulValueLen);
  }
  CK_BYTE signature[1024];
  CK_ULONG signature_length = 0;
  PRINT_RV("SignInit", f->C_SignInit(session, &mechanism, key));
  PRINT_RV("Sign.query", f->C_Sign(session, (CK_BYTE_PTR)argv[3], strlen(argv[3]), NULL, &signature_length));
  printf("Sign.queryLength %lu\n", (unsigned long)signature_length);
  signature_length = sizeof signature;
  PRINT_RV("Sign", f->C_Sign(session, (CK_BYTE_PTR)argv[3], strlen(argv[3]), signature, &signature_length));
  print_hex("signature", signature, signature_length);
  PRINT_RV("Finalize", f->C_Finalize(NULL));
  printf("done 1\n");
  return 0;
}
