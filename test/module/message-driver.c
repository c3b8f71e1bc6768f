/* The PKCS#11 3.0 message API (C_MessageEncryptInit, C_EncryptMessage, C_DecryptMessage ...) with CKM_AES_GCM and
 * CK_GCM_MESSAGE_PARAMS, driven through the real helper for test/module/aes-message.test.ts (pkcs11js only speaks
 * 2.40). Usage:
 *   message-driver MODULE SLOT_INDEX PLAIN_HEX AAD_HEX IV_HEX CIPHERTEXT_HEX TAG_HEX
 * It encrypts PLAIN with AAD under the slot's secret key (the module draws the IV), and decrypts the given message
 * (a node:crypto one), untouched and tampered. Prints "key value" lines; the test judges them with node:crypto. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "../fixtures/pkcs11-v30.h"

#define PRINT_RV(key, rv) printf("%s 0x%lx\n", key, (unsigned long)(rv))
#define MAX_BYTES 4096

/* The 3.0 function table: the 2.40 table followed by these. */
struct table3 {
  CK_FUNCTION_LIST v2;
  void *get_interface_list, *get_interface, *login_user, *session_cancel;
  message_init_t message_encrypt_init;
  message_t encrypt_message;
  void *encrypt_message_begin, *encrypt_message_next;
  message_final_t message_encrypt_final;
  message_init_t message_decrypt_init;
  message_t decrypt_message;
  void *decrypt_message_begin, *decrypt_message_next;
  message_final_t message_decrypt_final;
};
#define CKG_NO_GENERATE 0x0UL
#define CKG_GENERATE_RANDOM 0x3UL /* PKCS#11 3.0: NO_GENERATE 0, GENERATE 1, GENERATE_COUNTER 2, GENERATE_RANDOM 3 */

struct bytes {
  CK_BYTE data[MAX_BYTES];
  CK_ULONG len;
};

static int from_hex(const char *hex, struct bytes *out) {
  size_t n = strlen(hex);
  if (n % 2 != 0 || n / 2 > MAX_BYTES) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned int byte;
    if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
    out->data[i] = (CK_BYTE)byte;
  }
  out->len = (CK_ULONG)(n / 2);
  return 0;
}

static void print_hex(const char *key, const CK_BYTE *data, CK_ULONG len) {
  printf("%s ", key);
  for (CK_ULONG i = 0; i < len; i++) printf("%02x", data[i]);
  printf("\n");
}

static struct table3 *f;
static CK_SESSION_HANDLE session;

/* One C_EncryptMessage with a module-drawn IV; prints rv, output length, ciphertext, IV and tag under `key`. */
static void encrypt(const char *key, CK_ULONG generator, CK_ULONG iv_len, CK_ULONG tag_bits, struct bytes *aad,
                    struct bytes *plain, int query) {
  CK_BYTE iv[64] = {0}, tag[16] = {0}, out[MAX_BYTES + 16];
  gcm_message_params_t params = {iv, iv_len, 0, generator, tag, tag_bits};
  CK_ULONG out_len = query ? 0 : sizeof out;
  char name[64];
  CK_RV rv = f->encrypt_message(session, &params, sizeof params, aad->data, aad->len, plain->data, plain->len,
                                query ? NULL : out, &out_len);
  snprintf(name, sizeof name, "%s.rv", key);
  PRINT_RV(name, rv);
  snprintf(name, sizeof name, "%s.len", key);
  printf("%s %lu\n", name, (unsigned long)out_len);
  if (rv != CKR_OK || query) {
    /* Nothing may have been written into the caller's IV or tag. */
    int untouched = 1;
    for (CK_ULONG i = 0; i < sizeof iv; i++) untouched &= iv[i] == 0;
    for (CK_ULONG i = 0; i < sizeof tag; i++) untouched &= tag[i] == 0;
    snprintf(name, sizeof name, "%s.untouched", key);
    printf("%s %d\n", name, untouched);
    return;
  }
  snprintf(name, sizeof name, "%s.ciphertext", key);
  print_hex(name, out, out_len);
  snprintf(name, sizeof name, "%s.iv", key);
  print_hex(name, iv, iv_len);
  snprintf(name, sizeof name, "%s.tag", key);
  print_hex(name, tag, tag_bits / 8);
}

static void decrypt(const char *key, struct bytes *iv, struct bytes *tag, struct bytes *aad, struct bytes *cipher) {
  gcm_message_params_t params = {iv->data, iv->len, 0, CKG_NO_GENERATE, tag->data, tag->len * 8};
  CK_BYTE out[MAX_BYTES];
  CK_ULONG out_len = sizeof out;
  char name[64];
  CK_RV rv = f->decrypt_message(session, &params, sizeof params, aad->data, aad->len, cipher->data, cipher->len, out,
                                &out_len);
  snprintf(name, sizeof name, "%s.rv", key);
  PRINT_RV(name, rv);
  if (rv == CKR_OK) {
    snprintf(name, sizeof name, "%s.plaintext", key);
    print_hex(name, out, out_len);
  }
}

int main(int argc, char **argv) {
  static struct bytes plain, aad, iv, cipher, tag;
  if (argc != 8 || from_hex(argv[3], &plain) || from_hex(argv[4], &aad) || from_hex(argv[5], &iv) ||
      from_hex(argv[6], &cipher) || from_hex(argv[7], &tag) || tag.len == 0 || cipher.len == 0) {
    fprintf(stderr, "usage: message-driver MODULE SLOT_INDEX PLAIN AAD IV CIPHERTEXT TAG (hex)\n");
    return 2;
  }
  void *table = load_v30_table(argv[1]);
  if (table == NULL) return 2;
  f = table;

  PRINT_RV("Initialize", f->v2.C_Initialize(NULL));
  CK_SLOT_ID slots[16];
  CK_ULONG count = 16;
  PRINT_RV("GetSlotList", f->v2.C_GetSlotList(CK_TRUE, slots, &count));
  unsigned long index = strtoul(argv[2], NULL, 10);
  if (index >= count) {
    fprintf(stderr, "slot %lu of %lu\n", index, (unsigned long)count);
    return 2;
  }
  PRINT_RV("OpenSession", f->v2.C_OpenSession(slots[index], CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_OBJECT_CLASS klass = CKO_SECRET_KEY;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &klass, sizeof klass}};
  CK_OBJECT_HANDLE key = 0;
  CK_ULONG n = 0;
  f->v2.C_FindObjectsInit(session, tmpl, 1);
  f->v2.C_FindObjects(session, &key, 1, &n);
  f->v2.C_FindObjectsFinal(session);
  printf("keys %lu\n", (unsigned long)n);

  CK_MECHANISM gcm = {CKM_AES_GCM, NULL, 0};
  CK_MECHANISM cbc = {CKM_AES_CBC, NULL, 0};
  PRINT_RV("EncryptMessage.notInitialized", f->encrypt_message(session, NULL, 0, NULL, 0, plain.data, plain.len, NULL, &n));
  PRINT_RV("MessageEncryptInit.cbc", f->message_encrypt_init(session, &cbc, key));
  PRINT_RV("MessageEncryptInit", f->message_encrypt_init(session, &gcm, key));
  PRINT_RV("MessageEncryptInit.again", f->message_encrypt_init(session, &gcm, key));
  encrypt("query", CKG_GENERATE_RANDOM, 12, 128, &aad, &plain, 1);
  encrypt("first", CKG_GENERATE_RANDOM, 12, 128, &aad, &plain, 0);
  encrypt("second", CKG_GENERATE_RANDOM, 12, 128, &aad, &plain, 0);
  /* What the HSM cannot honour: the caller's IV, another IV size, another tag size. */
  encrypt("callerIv", CKG_NO_GENERATE, 12, 128, &aad, &plain, 0);
  encrypt("iv16", CKG_GENERATE_RANDOM, 16, 128, &aad, &plain, 0);
  encrypt("tag96", CKG_GENERATE_RANDOM, 12, 96, &aad, &plain, 0);
  PRINT_RV("MessageEncryptFinal", f->message_encrypt_final(session));
  encrypt("afterFinal", CKG_GENERATE_RANDOM, 12, 128, &aad, &plain, 0);
  PRINT_RV("MessageEncryptFinal.again", f->message_encrypt_final(session));

  PRINT_RV("MessageDecryptInit", f->message_decrypt_init(session, &gcm, key));
  decrypt("node", &iv, &tag, &aad, &cipher);
  tag.data[tag.len - 1] ^= 1;
  decrypt("tamperedTag", &iv, &tag, &aad, &cipher);
  tag.data[tag.len - 1] ^= 1;
  if (aad.len > 0) {
    aad.data[0] ^= 1;
    decrypt("tamperedAad", &iv, &tag, &aad, &cipher);
    aad.data[0] ^= 1;
  }
  cipher.data[0] ^= 1;
  decrypt("tamperedCiphertext", &iv, &tag, &aad, &cipher);
  cipher.data[0] ^= 1;
  decrypt("nodeAgain", &iv, &tag, &aad, &cipher);
  PRINT_RV("MessageDecryptFinal", f->message_decrypt_final(session));
  decrypt("afterFinal", &iv, &tag, &aad, &cipher);

  PRINT_RV("CloseSession", f->v2.C_CloseSession(session));
  PRINT_RV("Finalize", f->v2.C_Finalize(NULL));
  printf("done 1\n");
  return 0;
}
